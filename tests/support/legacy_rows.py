"""Legacy import test data: CSV files and ImportLegacy streams for the calling operator."""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import grpc

from services.proto.realname.v1 import common_pb2 as cpb
from services.proto.realname.v1 import legacy_pb2 as lpb
from services.proto.realname.v1 import legacy_pb2_grpc as lgrpc
from tests.support.identities import iccid, msisdn

HEADER = ("msisdn", "iccid", "status", "document_type", "document_number")
Row = tuple[str, str, str, str, str]


def good_rows(count: int, *, start: int = 0, prefix: str = "138", status: str = "UNVERIFIED",
              iccid_base: int = 500_000) -> list[Row]:  # fmt: skip
    """``count`` valid rows of distinct numbers under ``prefix`` (cmcc's 138 by default)."""
    return [
        (msisdn(prefix, 7_000_000 + start + i), iccid(iccid_base + start + i), status, "", "")
        for i in range(count)
    ]


def write_csv(path: Path, rows: Sequence[Sequence[str]]) -> Path:
    """Writes an import file with the standard header (and activated_on if a row has one)."""
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        dated = any(len(r) == len(HEADER) + 1 for r in rows)
        writer.writerow((*HEADER, "activated_on") if dated else HEADER)
        writer.writerows(rows)
    return path


def file_id(path: Path) -> str:
    """The import id of a file: its SHA-256."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def row_message(row: Sequence[str]) -> lpb.LegacyRow:
    """The protobuf row for a CSV row (document types by their CLI names; a 6th cell: the date)."""
    status = {"VERIFIED": lpb.LEGACY_STATUS_VERIFIED, "UNVERIFIED": lpb.LEGACY_STATUS_UNVERIFIED}
    message = lpb.LegacyRow(msisdn=row[0], iccid=row[1], status=status.get(row[2], 0))
    if len(row) > 5:
        message.activated_on = row[5]
    if row[3]:
        message.document.CopyFrom(
            cpb.Document(type=cpb.DOCUMENT_TYPE_RESIDENT_ID_CARD, number=row[4])
        )
    return message


def stream(
    import_id: str,
    mode: int,
    rows: Sequence[Sequence[str]],
    *,
    first_row: int = 1,
    batch: int = 50,
    total: int | None = None,
    max_bad_ratio: float = 0.01,
) -> Iterator[lpb.ImportLegacyRequest]:
    """A header and the rows from ``first_row`` on, in batches."""
    header = lpb.ImportHeader(
        import_id=import_id, mode=mode, total_rows=len(rows) if total is None else total,  # type: ignore[arg-type]
        max_bad_ratio=max_bad_ratio,
    )  # fmt: skip
    yield lpb.ImportLegacyRequest(header=header)
    for index in range(first_row - 1, len(rows), batch):
        chunk = [row_message(r) for r in rows[index : index + batch]]
        yield lpb.ImportLegacyRequest(batch=lpb.LegacyRowBatch(first_row=index + 1, rows=chunk))


def import_rows(
    ch: grpc.Channel, rows: Sequence[Sequence[str]], import_id: str, *, batch: int = 50
) -> lpb.ImportLegacyResponse:
    """Validates then commits ``rows`` over gRPC; returns the commit's response."""
    stub = lgrpc.LegacyServiceStub(ch)
    checked = stub.ImportLegacy(
        stream(import_id, lpb.IMPORT_MODE_VALIDATE, rows, batch=batch, max_bad_ratio=1.0)
    )
    assert checked.legacy_import.state == lpb.IMPORT_STATE_VALIDATED
    return stub.ImportLegacy(stream(import_id, lpb.IMPORT_MODE_COMMIT, rows, batch=batch))
