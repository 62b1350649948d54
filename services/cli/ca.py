"""`realname ca init-root|add-operator|rotate-operator|revoke-operator|crl`: the authorities.

These act on the data directory and the database directly, not through the server, because
they need the regulator root's key (a file in ``<data_dir>/registry/``, which can be kept off
the serving machine).

Exit codes: 0 done, 2 bad arguments or local state.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeVar

from cryptography import x509
from sqlalchemy import Connection

from registry.authz import authorities
from registry.authz.errors import RegistryError
from registry.pki.authority import create_root_ca
from registry.pki.errors import PkiError
from registry.pki.operators import OperatorKind
from services.cli.common import (
    EXIT_OK,
    REASONS,
    Command,
    SubParsers,
    command_group,
    data_settings,
    guard,
)
from services.runtime.ca_material import key_directory, public_base_url
from services.runtime.config import add_data_dir_argument
from services.storage.database import Database

T = TypeVar("T")


def _with_db(args: argparse.Namespace, work: Callable[[Connection], T]) -> T:
    db = Database(data_settings(args).database())
    try:
        return db.write(work)
    finally:
        db.dispose()


def cmd_ca_init_root(args: argparse.Namespace) -> int:
    """Create the regulator root (key file) and record it in the database (idempotent)."""
    keys = key_directory(data_settings(args).data_dir)
    passphrase = keys.require_passphrase()
    created = False
    if not keys.has_root():
        keys.save_root(create_root_ca(), passphrase)
        created = True
    root = keys.load_root(passphrase)
    _with_db(args, lambda conn: authorities.install_root(conn, root))
    print(f"root {'created' if created else 'kept'}: {keys.root_certificate}")
    return EXIT_OK


def cmd_ca_add_operator(args: argparse.Namespace) -> int:
    """Certify an operator's first CA."""
    keys = key_directory(data_settings(args).data_dir)
    passphrase = keys.require_passphrase()
    root = keys.load_root(passphrase)
    kind = OperatorKind[args.kind.upper()] if args.kind else None
    record = _with_db(
        args,
        lambda conn: authorities.add_operator_ca(
            conn, root, args.operator, passphrase, base_url=public_base_url(), kind=kind
        ),
    )
    print(f"operator CA for {args.operator}: generation {record.generation}")
    print(f"serial {record.serial_hex}")
    return EXIT_OK


def cmd_ca_rotate_operator(args: argparse.Namespace) -> int:
    """Certify a new key for an operator's CA."""
    keys = key_directory(data_settings(args).data_dir)
    passphrase = keys.require_passphrase()
    root = keys.load_root(passphrase)
    record = _with_db(
        args,
        lambda conn: authorities.rotate_operator_ca(
            conn, root, args.operator, passphrase, base_url=public_base_url()
        ),
    )
    print(f"operator CA for {args.operator}: generation {record.generation}")
    print(f"serial {record.serial_hex}")
    return EXIT_OK


def cmd_ca_revoke_operator(args: argparse.Namespace) -> int:
    """Revoke every key generation of an operator's CA (the root CRL is re-signed)."""
    keys = key_directory(data_settings(args).data_dir)
    root = keys.load_root()
    reason = int(REASONS[args.reason])
    revoked = _with_db(
        args,
        lambda conn: authorities.revoke_operator_ca(conn, root, args.operator, reason_code=reason),
    )
    print(f"revoked {len(revoked)} CA generation(s) of {args.operator}")
    return EXIT_OK


def cmd_ca_crl(args: argparse.Namespace) -> int:
    """Re-sign the root CRL now (the regulator's daily job when the root key is offline)."""
    keys = key_directory(data_settings(args).data_dir)
    root = keys.load_root()
    crl = _with_db(args, lambda conn: authorities.sign_crl(conn, "root", root))
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    print(f"root CRL number {number}, next update {crl.next_update_utc:%Y-%m-%dT%H:%M:%SZ}")
    return EXIT_OK


def _guarded(command: Command) -> Command:
    return guard(command, RegistryError, PkiError)


def register(subparsers: SubParsers) -> None:
    """Adds `realname ca …`."""
    ca_sub = command_group(
        subparsers, "ca", "the regulator root and operator CAs (local, root key)"
    )
    p = ca_sub.add_parser("init-root", help="create the regulator root (idempotent)")
    add_data_dir_argument(p)
    p.set_defaults(func=_guarded(cmd_ca_init_root))
    p = ca_sub.add_parser("add-operator", help="certify an operator's CA")
    add_data_dir_argument(p)
    p.add_argument("operator")
    p.add_argument("--kind", choices=["basic", "virtual"], help="needed for unknown operators")
    p.set_defaults(func=_guarded(cmd_ca_add_operator))
    p = ca_sub.add_parser("rotate-operator", help="certify a new key for an operator's CA")
    add_data_dir_argument(p)
    p.add_argument("operator")
    p.set_defaults(func=_guarded(cmd_ca_rotate_operator))
    p = ca_sub.add_parser("revoke-operator", help="revoke an operator's CA (root CRL)")
    add_data_dir_argument(p)
    p.add_argument("operator")
    p.add_argument("--reason", choices=sorted(REASONS), default="privilege-withdrawn")
    p.set_defaults(func=_guarded(cmd_ca_revoke_operator))
    p = ca_sub.add_parser("crl", help="re-sign the root CRL now")
    add_data_dir_argument(p)
    p.set_defaults(func=_guarded(cmd_ca_crl))
