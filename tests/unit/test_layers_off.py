"""REALNAME_LAYERS_OFF: the bench-only switches of `realname serve`."""

from __future__ import annotations

import pytest

from services.runtime.config import ConfigError, layers_off


def test_layers_off_reads_known_names() -> None:
    """Unset means every layer on; names are comma-separated, spaces ignored."""
    assert layers_off(None) == frozenset()
    assert layers_off(" audit , metrics") == {"audit", "metrics"}
    assert layers_off("guards") == {"guards"}


def test_layers_off_refuses_unknown_names() -> None:
    """A misspelt layer is refused rather than silently left on."""
    with pytest.raises(ConfigError, match="unknown layers logs"):
        layers_off("audit,logs")
