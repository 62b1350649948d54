"""The one clock: aware UTC datetimes, and the injectable ``Clock`` every service takes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    """Return the current time as an aware UTC datetime (the default ``Clock``)."""
    return dt.datetime.now(dt.UTC)


def whole_seconds(moment: dt.datetime) -> dt.datetime:
    """Return ``moment`` truncated to whole seconds, as X.509 times store it."""
    return moment.replace(microsecond=0)


def as_utc(moment: dt.datetime | None) -> dt.datetime:
    """Return ``moment`` as an aware UTC datetime (naive means UTC, as in cryptography).

    ``None`` means now, in whole seconds, so that a default validity start reads back unchanged
    from a certificate.
    """
    if moment is None:
        return whole_seconds(utc_now())
    if moment.tzinfo is None:
        return moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)
