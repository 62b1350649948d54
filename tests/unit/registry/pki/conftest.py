from __future__ import annotations

import pytest

from registry.clock import utc_now, whole_seconds
from tests.unit.registry.pki.factory import World, make_world


@pytest.fixture(scope="session")
def world() -> World:
    """One hierarchy for the whole session: keys are generated once."""
    return make_world(whole_seconds(utc_now()))
