"""Tx.probe_all: several one-value reads answered by one statement, in order, on both engines."""

from __future__ import annotations

from services.storage.database import Database
from services.storage.rawsql import Probe, Tx


def test_probes_answer_in_order_with_their_own_parameters(db: Database) -> None:
    probes = [
        Probe("SELECT card_limit FROM operators WHERE id = ?", ("cmcc",)),
        Probe("SELECT card_limit FROM operators WHERE id = ?", ("no-such-operator",)),
        Probe(
            "SELECT id FROM operators WHERE id = ? OR id = ? ORDER BY id LIMIT 1", ("cucc", "ctcc")
        ),
        Probe("SELECT COUNT(*) FROM operators WHERE id = ?", ("cmcc",)),
    ]

    def read(tx: Tx) -> tuple[list[object], list[object]]:
        return tx.probe_all(probes), [tx.probe(p) for p in probes]

    together, one_by_one = db.run_tx(read, readonly=True)
    assert together == one_by_one
    assert together[1] is None
    assert together[2] == "ctcc"
    assert together[3] == 1


def test_no_probes_answer_nothing(db: Database) -> None:
    assert db.run_tx(lambda tx: tx.probe_all([]), readonly=True) == []
