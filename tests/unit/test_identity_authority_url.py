"""The identity authority's endpoint: names and numbers travel only over TLS, except on loopback."""

from __future__ import annotations

import pytest

from services.runtime.config import ConfigError
from services.runtime.identity_authority import HttpAuthority


@pytest.mark.parametrize(
    "url",
    [
        "https://authority.example/verify",
        "https://10.0.0.8:8443/verify",
        "http://127.0.0.1:8080/verify",
        "http://127.8.9.10/verify",
        "http://[::1]:8080/verify",
        "http://localhost:8080/verify",
        "HTTP://LOCALHOST/verify",
    ],
)
def test_https_or_loopback_http_is_accepted(url: str) -> None:
    HttpAuthority(url, timeout=1)


@pytest.mark.parametrize(
    "url",
    [
        "http://authority.example/verify",
        "http://10.0.0.8:8080/verify",
        "http://[2001:db8::1]/verify",
        "http://127.0.0.1.authority.example/verify",
        "http://localhost.authority.example/verify",
        "http://0.0.0.0/verify",
    ],
)
def test_plain_http_off_loopback_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        HttpAuthority(url, timeout=1)
    message = str(info.value)
    assert "REALNAME_IDENTITY_AUTHORITY_URL" in message and "https" in message


@pytest.mark.parametrize("url", ["ftp://authority.example/", "authority.example", "https://"])
def test_other_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        HttpAuthority(url, timeout=1)
