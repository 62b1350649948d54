"""Extension points of card activation: rules other features add without editing the cap logic."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any

from services.domain.cards import ActivateCard
from services.domain.documents import Document
from services.domain.errors import RealnameError
from services.storage.rawsql import Probe, Tx

HolderCheck = Callable[[str, Document, str | None], None]
"""A check of a registering holder (operator id, document, name); refuses by raising."""


class GuardAssumptionChanged(Exception):
    """Raised by ``check`` when what ``before`` relied on changed since: run ``before`` again."""


class ActivationGuard:
    """A rule consulted at every activation; the default hooks accept and record nothing.

    A refusal is a ``RealnameError`` raised from ``before`` or ``check``. Refusals from ``check``
    are recorded as the request's outcome, so a retried request id replays them. The reads a
    ``check`` needs are declared by ``probes`` and answered for every guard in one statement:
    each read on the activation path is a round trip, and activations are the hot path.
    """

    def before(self, operator_id: str, cmd: ActivateCard) -> None:
        """Runs before any transaction: the place for remote calls (identity authority)."""

    def probes(self, operator_id: str, cmd: ActivateCard) -> Sequence[Probe]:
        """The values ``check`` needs read in the activation transaction."""
        return ()

    def check(
        self,
        tx: Tx,
        operator_id: str,
        cmd: ActivateCard,
        now: dt.datetime,
        answers: Sequence[Any],
    ) -> None:
        """Runs inside the activation transaction, before the card is written.

        ``answers`` holds the values of this guard's ``probes``, in their order.
        """

    def activated(
        self, tx: Tx, operator_id: str, card_id: int, cmd: ActivateCard, now: dt.datetime
    ) -> None:
        """Runs inside the activation transaction after the card and its slot are written."""

    def new_holder(self, tx: Tx, operator_id: str, document: Document, now: dt.datetime) -> None:
        """Runs in a transaction giving a live card to another holder (TransferCard), before it
        moves: refuses, by raising, what ``check`` refuses an activation for that holder for.

        Only for rules about the holder, not the sale (there is no channel, name or attestation).
        """

    def eligibility_probes(self, operator_id: str, document: Document) -> Sequence[Probe]:
        """The values ``eligibility`` needs, read in one statement with CheckEligibility's count."""
        return ()

    def eligibility(
        self, operator_id: str, document: Document, answers: Sequence[Any]
    ) -> RealnameError | None:
        """CheckEligibility's side of ``check``: the refusal an activation would get, or None.

        Only for rules that hold whatever the sale (no channel, name or attestation is known
        then). ``answers`` holds the values of ``eligibility_probes``, in their order.
        """
        return None
