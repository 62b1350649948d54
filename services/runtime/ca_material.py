"""Where a serving process (or the CLI) finds the seller-authorization CA material.

* the public base URL written into certificates: ``REALNAME_PUBLIC_BASE_URL`` (default
  ``http://127.0.0.1:8080``, the default HTTP address);
* the root key and the dev passphrase: ``<data_dir>/registry/`` (see
  ``registry.authz.keyfiles``); the CA passphrase: ``REALNAME_CA_PASSPHRASE``, else that dev file;
* the key sealing application contacts: derived from the identity pepper (HMAC-SHA-256 under a
  label), so the service has one secret file fewer and the database alone never opens them.

``ensure_dev_authorities`` is what ``realname dev-init`` adds: a demo regulator root and one CA
per demo operator, each created only if missing.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from sqlalchemy import Connection

from registry.authz import authorities
from registry.authz.keyfiles import KeyDirectory
from registry.authz.sealing import Sealer
from registry.pki.authority import create_root_ca
from registry.pki.operators import KNOWN_OPERATORS
from registry.pki.urls import normalise_base_url
from services.domain.pseudonym import Pseudonymizer
from services.features.sellers import DEFAULT_PUBLIC_BASE_URL, RegistryConfig
from services.storage.database import Database

BASE_URL_ENV: Final = "REALNAME_PUBLIC_BASE_URL"
"""Environment variable naming the public base URL of the HTTP side."""

CONTACT_KEY_ID: Final = "pepper-v1"
"""Key id stored beside sealed contacts: the key derived from the pepper, version 1."""

DEMO_OPERATORS: Final = tuple(KNOWN_OPERATORS)
"""Operators that ``realname dev-init`` gives a CA."""


def public_base_url() -> str:
    """The base URL of CRL and OCSP endpoints, from the environment or the default."""
    return normalise_base_url(os.environ.get(BASE_URL_ENV) or DEFAULT_PUBLIC_BASE_URL)


def key_directory(data_dir: Path) -> KeyDirectory:
    """The registry's key folder under a data directory."""
    return KeyDirectory(data_dir / "registry")


def contact_sealer(pseudonymizer: Pseudonymizer) -> Sealer:
    """The AES-GCM sealer of application contacts, keyed from the pepper."""
    return Sealer(CONTACT_KEY_ID, pseudonymizer.derive_key("registry-contact-v1"))


def registry_config(data_dir: Path, pseudonymizer: Pseudonymizer) -> RegistryConfig:
    """The registry configuration of a serving process over ``data_dir``."""
    return RegistryConfig(
        base_url=public_base_url(),
        key_dir=key_directory(data_dir),
        sealer=contact_sealer(pseudonymizer),
    )


@dataclass(frozen=True)
class DevAuthorities:
    """What ``ensure_dev_authorities`` did."""

    passphrase_created: bool
    root_created: bool
    operators_added: tuple[str, ...]


def ensure_dev_authorities(
    data_dir: Path, db: Database, *, now: dt.datetime | None = None
) -> DevAuthorities:
    """Make the dev passphrase, a regulator root and demo operator CAs, each only if missing.

    ``now`` backdates what is created (tests need CAs older than the certificates they make).
    """
    keys = key_directory(data_dir)
    made_passphrase = keys.ensure_dev_passphrase()
    passphrase = keys.require_passphrase()
    made_root = False
    if not keys.has_root():
        keys.save_root(create_root_ca(now=now), passphrase)
        made_root = True
    root = keys.load_root(passphrase)
    base_url = public_base_url()

    def work(conn: Connection) -> tuple[str, ...]:
        authorities.install_root(conn, root, now=now)
        added = []
        for operator in DEMO_OPERATORS:
            if not authorities.ca_generations(conn, operator):
                authorities.add_operator_ca(
                    conn, root, operator, passphrase, base_url=base_url, now=now
                )
                added.append(operator)
        return tuple(added)

    added = db.write(work)
    return DevAuthorities(made_passphrase, made_root, added)
