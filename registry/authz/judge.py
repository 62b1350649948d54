"""Verdicts from the registry's own records, for sweeps that must not pay for signatures.

:class:`registry.pki.verify.Verifier` checks a presented certificate: its signatures, its path to
the root and the CRLs. A registry answering about certificates it issued itself and keeps in its
database (a marketplace's sweep over its shop list) already knows all of that, exactly as an OCSP
responder does: the status columns and the CA rows are the source the CRLs are signed from, in the
same transactions. :func:`judge` decides from them, with the Verifier's precedence, so both give
the same reason for the same certificate (tests hold them to it):

EXPIRED / NOT_YET_VALID (store certificate, then its operator CA) > OPERATOR_REVOKED > REVOKED >
OUT_OF_SCOPE > AUTHORIZED; no record is UNKNOWN_STORE. A revocation counts from its recorded time,
except key and CA compromise, which count always.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Final

from registry.pki.scope import CardType, Scope
from registry.pki.verify import Reason

COMPROMISE_CODES: Final = frozenset({1, 2, 10})
"""RFC 5280 codes whose revocation applies regardless of the revocation time."""


@dataclass(frozen=True, slots=True)
class RecordFacts:
    """What the sweep reads per store: the authorization's and its operator CA's columns."""

    serial_hex: str
    operator: str
    scope: Scope
    not_before: dt.datetime
    not_after: dt.datetime
    revoked_at: dt.datetime | None
    revocation_reason: int | None
    ca_not_before: dt.datetime
    ca_not_after: dt.datetime
    ca_revoked_at: dt.datetime | None
    ca_revocation_reason: int | None


def _revoked(at: dt.datetime | None, reason: int | None, moment: dt.datetime) -> bool:
    return at is not None and (at <= moment or (reason or 0) in COMPROMISE_CODES)


def judge(
    facts: RecordFacts,
    *,
    card_type: CardType | None,
    province: str | None,
    moment: dt.datetime,
) -> tuple[Reason, str]:
    """The reason and a short detail for one store's current authorization at ``moment``."""
    for start, end, what in (
        (facts.not_before, facts.not_after, "store certificate"),
        (facts.ca_not_before, facts.ca_not_after, f"operator CA of {facts.operator}"),
    ):
        if moment > end:
            return Reason.EXPIRED, f"{what} expired at {end:%Y-%m-%dT%H:%M:%SZ}"
        if moment < start:
            return Reason.NOT_YET_VALID, f"{what} is valid from {start:%Y-%m-%dT%H:%M:%SZ}"
    if _revoked(facts.ca_revoked_at, facts.ca_revocation_reason, moment):
        return (
            Reason.OPERATOR_REVOKED,
            f"operator CA of {facts.operator} was revoked by the regulator",
        )
    if _revoked(facts.revoked_at, facts.revocation_reason, moment):
        return Reason.REVOKED, f"store authorization was revoked by {facts.operator}"
    if not facts.scope.permits(card_type, province):
        asked = f"{card_type or 'any card type'} in {province or 'any province'}"
        return Reason.OUT_OF_SCOPE, f"authorized for {facts.scope.describe()}, not {asked}"
    return Reason.AUTHORIZED, f"authorized by {facts.operator}"
