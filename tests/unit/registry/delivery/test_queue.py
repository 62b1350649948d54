"""Offline confirmation queue: durable appends, tombstones, torn tails, corruption, compaction."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from registry.delivery.errors import QueueCorruptError, QueueError
from registry.delivery.queue import Confirmation, ConfirmationQueue, new_confirmation
from registry.delivery.token import decode_token
from registry.subscribers import DocumentType
from tests.support.paths import REPO_ROOT
from tests.support.tokens import as_version_1
from tests.unit.registry.delivery.support import ID_NUMBER, Delivery

DELIVERED = dt.datetime(2026, 6, 1, 10, 30, 15, tzinfo=dt.UTC)


def confirmation(delivery: Delivery, number: str = ID_NUMBER, **overrides: object) -> Confirmation:
    token = delivery.token()
    values: dict[str, object] = {
        "courier_staff_id": "SF-staff-0042",
        "delivered_at": DELIVERED,
        "offline_reason": "OK",
    }
    values.update(overrides)
    return new_confirmation(token, DocumentType.RESIDENT_ID_CARD, number, **values)  # type: ignore[arg-type]


def test_confirmation_commits_to_the_presented_document(delivery: Delivery) -> None:
    matched = confirmation(delivery)
    decoded = decode_token(matched.token)
    assert matched.recipient_match
    assert matched.presented_commitment == decoded.fields.commitment
    assert matched.token_digest == decoded.digest
    mismatched = confirmation(delivery, "110105194912310011", offline_reason="RECIPIENT_MISMATCH")
    assert not mismatched.recipient_match
    assert mismatched.presented_commitment != decode_token(mismatched.token).fields.commitment
    assert matched.id != mismatched.id


def test_a_version_1_confirmation_queued_before_an_upgrade_still_reads(
    tmp_path: Path, delivery: Delivery
) -> None:
    # Sync sends it and reports the server's refusal; the rest of the queue is not blocked.
    current = confirmation(delivery)
    old_token = as_version_1(current.token, delivery.store_key, doc_type=1, number=ID_NUMBER)
    old = dataclasses.replace(
        current,
        id="0" * 32,
        token=old_token,
        token_digest=hashlib.sha256(old_token[:-64]).digest(),
    )
    queue = ConfirmationQueue(tmp_path / "queue.jsonl")
    queue.append(old)
    queue.append(current)
    assert list(queue.pending()) == [old, current]
    with pytest.raises(QueueError, match="digest"):
        dataclasses.replace(old, token_digest=bytes(32))
    with pytest.raises(QueueError, match="unknown version"):
        dataclasses.replace(old, token=b"\x07" + old_token[1:])


def test_append_read_and_sync(tmp_path: Path, delivery: Delivery) -> None:
    queue = ConfirmationQueue(tmp_path / "queue.jsonl")
    assert list(queue.pending()) == []
    first, second, third = (confirmation(delivery) for _ in range(3))
    for item in (first, second, third):
        queue.append(item)
    assert list(queue.pending()) == [first, second, third]
    queue.mark_synced(second.id, synced_at=DELIVERED)
    queue.mark_synced(second.id)  # idempotent
    assert list(queue.pending()) == [first, third]
    # A new queue object on the same file sees the same state (nothing is held in memory).
    assert list(ConfirmationQueue(queue.path).pending()) == [first, third]
    assert os.stat(queue.path).st_mode & 0o777 == 0o600


def test_the_file_never_holds_the_document_number(tmp_path: Path, delivery: Delivery) -> None:
    queue = ConfirmationQueue(tmp_path / "queue.jsonl")
    queue.append(confirmation(delivery, "110105 19491231 002x"))
    data = queue.path.read_bytes()
    for needle in (ID_NUMBER, "110105", "19491231", "002x"):
        assert needle.encode() not in data
    record = json.loads(data)
    assert record["delivered_at"] == "2026-06-01T10:30:15Z"
    assert record["document_type"] == 1


def test_torn_last_line_is_ignored_then_truncated(tmp_path: Path, delivery: Delivery) -> None:
    queue = ConfirmationQueue(tmp_path / "queue.jsonl")
    kept = confirmation(delivery)
    queue.append(kept)
    torn = confirmation(delivery).to_line()
    for cut in (1, len(torn) // 2, len(torn) - 1):
        with queue.path.open("ab") as handle:
            handle.write(torn[:cut])  # a crash in the middle of the write
        contents = queue.read()
        assert contents.torn_tail
        assert contents.pending() == (kept,)
        later = confirmation(delivery)
        queue.append(later)
        assert not queue.read().torn_tail
        assert list(queue.pending())[-1] == later
        queue.mark_synced(later.id)
    assert list(queue.pending()) == [kept]


def test_torn_line_in_an_otherwise_empty_file(tmp_path: Path, delivery: Delivery) -> None:
    path = tmp_path / "queue.jsonl"
    path.write_bytes(b'{"v":1,"type":"confirm')
    queue = ConfirmationQueue(path)
    assert list(queue.pending()) == []
    item = confirmation(delivery)
    queue.append(item)
    assert path.read_bytes() == item.to_line()


@pytest.mark.parametrize(
    "bad_line",
    [
        b"not json\n",
        b'{"v":2,"type":"synced","id":"00000000000000000000000000000000"}\n',
        b'{"v":1,"type":"nonsense"}\n',
        b'{"v":1,"type":"synced","id":"XYZ","synced_at":"2026-06-01T10:00:00Z"}\n',
        b'{"v":1,"type":"confirmation","id":"00000000000000000000000000000000"}\n',
        b"[]\n",
    ],
)
def test_a_corrupt_complete_line_is_an_error(
    tmp_path: Path, delivery: Delivery, bad_line: bytes
) -> None:
    queue = ConfirmationQueue(tmp_path / "queue.jsonl")
    queue.append(confirmation(delivery))
    with queue.path.open("ab") as handle:
        handle.write(bad_line)
    queue.append(confirmation(delivery))
    with pytest.raises(QueueCorruptError, match="line 2"):
        list(queue.pending())


def test_corrupt_fields_in_a_confirmation(tmp_path: Path, delivery: Delivery) -> None:
    record = json.loads(confirmation(delivery).to_line())
    for field, value in (
        ("recipient_match", "yes"),
        ("document_type", 9),
        ("token_digest", "zz"),
        ("delivered_at", "yesterday"),
        ("courier_staff_id", ""),
        ("token", "not base64!"),
        ("token", "AQID"),
        ("token_digest", "00" * 32),
    ):
        broken = dict(record, **{field: value})
        path = tmp_path / f"{field}.jsonl"
        path.write_bytes(json.dumps(broken).encode() + b"\n")
        with pytest.raises(QueueCorruptError):
            ConfirmationQueue(path).read()


def test_compact_keeps_only_pending(tmp_path: Path, delivery: Delivery) -> None:
    queue = ConfirmationQueue(tmp_path / "queue.jsonl")
    items = [confirmation(delivery) for _ in range(4)]
    for item in items:
        queue.append(item)
    queue.mark_synced(items[0].id)
    queue.mark_synced(items[2].id)
    with queue.path.open("ab") as handle:
        handle.write(b'{"torn')
    assert queue.compact() == 4  # two confirmations, two tombstones
    assert list(queue.pending()) == [items[1], items[3]]
    assert queue.path.read_bytes() == items[1].to_line() + items[3].to_line()
    assert os.stat(queue.path).st_mode & 0o777 == 0o600
    later = confirmation(delivery)
    queue.append(later)
    assert list(queue.pending()) == [items[1], items[3], later]


def test_duplicate_ids_are_yielded_once(tmp_path: Path, delivery: Delivery) -> None:
    queue = ConfirmationQueue(tmp_path / "queue.jsonl")
    item = confirmation(delivery)
    queue.append(item)
    queue.append(item)  # an app retrying an append that had in fact succeeded
    assert list(queue.pending()) == [item]


def test_invalid_records_are_refused(delivery: Delivery, tmp_path: Path) -> None:
    with pytest.raises(QueueError, match="timezone-aware"):
        confirmation(delivery, delivered_at=dt.datetime(2026, 6, 1, 10, 0))
    item = confirmation(delivery)
    with pytest.raises(QueueError, match="digest"):
        dataclasses.replace(item, token_digest=bytes(32))
    with pytest.raises(QueueError):
        confirmation(delivery, courier_staff_id="")
    with pytest.raises(QueueError):
        confirmation(delivery, courier_staff_id="x" * 65)
    with pytest.raises(QueueError):
        ConfirmationQueue(tmp_path / "q").mark_synced("not-an-id")


def test_every_append_is_fsynced(
    tmp_path: Path, delivery: Delivery, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.fstat(fd).st_ino)
        real_fsync(fd)

    monkeypatch.setattr("registry.delivery.queue.os.fsync", recording_fsync)
    queue = ConfirmationQueue(tmp_path / "queue.jsonl")
    queue.append(confirmation(delivery))
    file_inode = os.stat(queue.path).st_ino
    # The new file's data and its directory entry.
    assert synced.count(file_inode) == 1
    assert os.stat(tmp_path).st_ino in synced
    synced.clear()
    queue.mark_synced(queue.read().confirmations[0].id)
    assert synced == [file_inode]


CHILD = """
import dataclasses, secrets, sys
from registry.delivery.queue import Confirmation, ConfirmationQueue
import json
template = Confirmation.from_record(json.loads(open(sys.argv[2], "rb").read()))
queue = ConfirmationQueue(sys.argv[1])
while True:
    queue.append(dataclasses.replace(template, id=secrets.token_hex(16)))
"""


def test_a_killed_writer_leaves_a_readable_queue(tmp_path: Path, delivery: Delivery) -> None:
    template = tmp_path / "template.json"
    template.write_bytes(confirmation(delivery).to_line())
    path = tmp_path / "queue.jsonl"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(template)],
        cwd=REPO_ROOT,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if path.exists() and path.stat().st_size > 20_000:
                break
            time.sleep(0.01)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    queue = ConfirmationQueue(path)
    before = queue.read()
    assert len(before.pending()) > 10
    queue.append(confirmation(delivery))
    assert len(queue.read().pending()) == len(before.pending()) + 1
