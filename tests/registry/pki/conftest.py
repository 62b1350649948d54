from __future__ import annotations

import pytest

from registry.pki._util import utc_now
from tests.registry.pki.factory import World, make_world


@pytest.fixture(scope="session")
def world() -> World:
    """One hierarchy for the whole session: keys are generated once."""
    return make_world(utc_now())
