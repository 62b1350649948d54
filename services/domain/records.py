"""Stored records that feature services hand to their servicers: plain values, no behaviour.

They live below storage so that servicers can read them without importing the storage layer.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from registry.subscribers import DocumentType


@dataclass(frozen=True)
class ImportRecord:
    """An import's row in ``legacy_imports``."""

    import_id: str
    state: str
    total_rows: int
    bad_rows: int
    max_bad_ratio: float
    committed_rows: int
    imported_rows: int
    failed_rows: int
    updated_at: dt.datetime
    documents_over_cap: int = 0


@dataclass(frozen=True)
class PolicyRecord:
    """An operator's deadline policy."""

    operator_id: str
    deadline: dt.date
    grace_days: int
    termination_days: int
    updated_at: dt.datetime


@dataclass(frozen=True)
class ScenarioRow:
    """A declared scenario and the APNs its cards may use."""

    name: str
    apns: tuple[str, ...]


@dataclass(frozen=True)
class EnterpriseRow:
    """An enterprise as registered with one operator."""

    operator_id: str
    credit_code: str
    name: str
    responsible_key: bytes
    responsible_type: DocumentType
    responsible_masked: str
    card_quota: int
    active: int
    registered_at: dt.datetime
    scenarios: tuple[ScenarioRow, ...]


@dataclass(frozen=True)
class ActionRow:
    """One enforcement action as stored."""

    id: int
    operator_id: str
    kind: str
    amount_yuan: int | None
    reason: str
    recorded_at: dt.datetime
    lifted_at: dt.datetime | None
    ca_revoked: bool


@dataclass(frozen=True)
class ReaderRow:
    """A registered reader."""

    operator_id: str
    serial: str
    agent_id: str
    key_algorithm: str
    public_key: bytes
    key_fingerprint: str
    latitude: float | None  # None (with longitude): registered without a location, unknown
    longitude: float | None
    location_label: str
    registered_at: dt.datetime
    revoked_at: dt.datetime | None
    revocation_reason: str | None


@dataclass(frozen=True)
class SignalRow:
    """A stored fraud signal."""

    id: int
    kind: str
    operator_id: str
    agent_id: str
    reader_serial: str
    detail: str
    observed_at: dt.datetime
