"""Hot-path SQL over the registry's tables (``registry.authz.tables``) on the driver connection.

VerifySeller, the VerifySellers sweep and the online-activation check each need one indexed
read, together with the registry's generation so that the caller can tell in the same round trip
whether its in-memory verifier (and shop cache) is stale. SQLAlchemy Core would cost more than the
query itself here (see ``rawsql``); everything else in the registry goes through Core.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from services.storage.rawsql import Tx

# SQLite builds before 3.32 allow 999 bound parameters; a batch is queried in chunks below that.
IN_CHUNK: Final = 900

_GENERATION = "(SELECT generation FROM authz_state WHERE id = 1)"


@dataclass(frozen=True, slots=True)
class StoredCertificate:
    """A store's current certificate as VerifySeller needs it."""

    generation: int
    serial_hex: str
    operator: str
    certificate: bytes


@dataclass(frozen=True, slots=True)
class SweepRow:
    """The columns the sweep judges a shop on (authorization and its operator CA)."""

    shop_id: str
    serial_hex: str
    operator: str
    card_types: str
    provinces: str
    not_before: dt.datetime
    not_after: dt.datetime
    revoked_at: dt.datetime | None
    revocation_reason: int | None
    ca_not_before: dt.datetime
    ca_not_after: dt.datetime
    ca_revoked_at: dt.datetime | None
    ca_revocation_reason: int | None


def generation(tx: Tx) -> int:
    """The registry's revocation generation."""
    row = tx.one("SELECT generation FROM authz_state WHERE id = 1")
    return 0 if row is None else int(row[0])


def shop_certificates(
    tx: Tx, marketplace: str, shop_id: str
) -> tuple[int, list[StoredCertificate]]:
    """The registry generation and the shop's current certificates (every operator's).

    One statement: the generation comes back even for a shop with no authorization, so that an
    unknown shop's answer can be cached against it like any other.
    """
    rows = tx.all(
        "SELECT s.generation, a.serial_hex, a.operator, a.certificate FROM authz_state s "
        "LEFT JOIN authz_authorizations a "
        "ON a.marketplace = ? AND a.shop_id = ? AND a.is_current WHERE s.id = 1",
        (marketplace, shop_id),
    )
    generation = int(rows[0][0]) if rows else 0
    return generation, [
        StoredCertificate(int(row[0]), str(row[1]), str(row[2]), bytes(row[3]))
        for row in rows
        if row[1] is not None
    ]


def certificate_by_serial(tx: Tx, serial_hex: str) -> StoredCertificate | None:
    """One authorization's certificate by canonical serial, with the generation."""
    row = tx.one(
        f"SELECT {_GENERATION}, serial_hex, operator, certificate "  # noqa: S608
        "FROM authz_authorizations WHERE serial_hex = ?",
        (serial_hex,),
    )
    return None if row is None else StoredCertificate(int(row[0]), row[1], row[2], bytes(row[3]))


def sweep_rows(
    tx: Tx, marketplace: str, shop_ids: Sequence[str], operator: str | None
) -> list[SweepRow]:
    """The current authorizations of some shops of a marketplace, joined with their CA rows."""
    out: list[SweepRow] = []
    parse = tx.parse_timestamp
    for start in range(0, len(shop_ids), IN_CHUNK):
        chunk = list(shop_ids[start : start + IN_CHUNK])
        marks = ", ".join("?" * len(chunk))
        sql = (
            "SELECT a.shop_id, a.serial_hex, a.operator, a.card_types, a.provinces, "  # noqa: S608
            "a.not_before, a.not_after, a.revoked_at, a.revocation_reason, "
            "c.not_before, c.not_after, c.revoked_at, c.revocation_reason "
            "FROM authz_authorizations a JOIN authz_cas c ON c.id = a.ca_id "
            f"WHERE a.marketplace = ? AND a.is_current AND a.shop_id IN ({marks})"
        )
        params: list[object] = [marketplace, *chunk]
        if operator is not None:
            sql += " AND a.operator = ?"
            params.append(operator)
        for row in tx.all(sql, params):
            out.append(
                SweepRow(
                    shop_id=row[0],
                    serial_hex=row[1],
                    operator=row[2],
                    card_types=row[3],
                    provinces=row[4],
                    not_before=_required(parse(row[5])),
                    not_after=_required(parse(row[6])),
                    revoked_at=parse(row[7]),
                    revocation_reason=row[8],
                    ca_not_before=_required(parse(row[9])),
                    ca_not_after=_required(parse(row[10])),
                    ca_revoked_at=parse(row[11]),
                    ca_revocation_reason=row[12],
                )
            )
    return out


def _required(value: dt.datetime | None) -> dt.datetime:
    if value is None:
        raise ValueError("a NOT NULL timestamp column was NULL")
    return value
