"""The unit layer: no server process and no database server (``make test-fast``)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    """Refuse the PostgreSQL server: a test that needs one belongs in tests/integration."""
    pytest.fail("a unit test asked for a PostgreSQL server; move it to tests/integration")
