from __future__ import annotations

import pytest

from registry.clock import utc_now, whole_seconds
from tests.unit.registry.delivery.support import Delivery, make_delivery


@pytest.fixture(scope="session")
def delivery() -> Delivery:
    """One PKI, log and set of stores for the whole session: keys are generated once."""
    return make_delivery(whole_seconds(utc_now()))
