"""What the `realname` command modules share.

The exit-code table, the one :class:`UsageError`, the mTLS channel to the server and the
arguments that locate it, the guard that turns errors into an exit status, and command groups
that several modules add verbs to (``report``, ``import``, ``store``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeAlias, TypeVar

import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from registry.subscribers import DocumentType
from services.proto.realname.v1 import registry_pb2 as rpb
from services.runtime.config import (
    DEFAULT_GRPC_ADDRESS,
    Settings,
    add_data_dir_argument,
    env_default,
)

SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Command: TypeAlias = Callable[[argparse.Namespace], int]
T = TypeVar("T")

# -- exit codes ---------------------------------------------------------------------------------

EXIT_OK: Final = 0
"""Done; for a check, it passed."""
EXIT_FAILED: Final = 1
"""The server refused or failed the call."""
EXIT_INCONSISTENT: Final = 1
"""What was verified does not hold together: a tampered audit trail, an inconsistent log."""
EXIT_USAGE: Final = 2
"""The command could not be run as given (arguments, files, configuration)."""
EXIT_REFUSED: Final = 3
"""The answer was no: a seller not AUTHORIZED, a service refused, a delivery verdict not OK, an
import file over its bad-row limit."""
EXIT_UNREACHABLE: Final = 3
"""``log monitor`` and ``log cosign``: the log could not be read or refused the request."""


class UsageError(Exception):
    """Raised for bad command-line input or local state; the message is shown to the user."""


# -- values several command groups name the same way ---------------------------------------------

DOCUMENT_TYPES: Final = {kind.name.lower().replace("_", "-"): kind for kind in DocumentType}
"""Document types by their file and command-line names (``resident-id-card``, ``passport``, …)."""

REASONS: Final = {
    "unspecified": rpb.REVOCATION_REASON_UNSPECIFIED,
    "key-compromise": rpb.REVOCATION_REASON_KEY_COMPROMISE,
    "ca-compromise": rpb.REVOCATION_REASON_CA_COMPROMISE,
    "affiliation-changed": rpb.REVOCATION_REASON_AFFILIATION_CHANGED,
    "superseded": rpb.REVOCATION_REASON_SUPERSEDED,
    "cessation-of-operation": rpb.REVOCATION_REASON_CESSATION_OF_OPERATION,
    "privilege-withdrawn": rpb.REVOCATION_REASON_PRIVILEGE_WITHDRAWN,
}
"""RFC 5280 revocation reasons by their command-line names."""


def duration(text: str) -> dt.timedelta:
    """An argument type: a whole number of seconds, minutes, hours or days (``90m``, ``24h``)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if len(text) < 2 or text[-1] not in units or not text[:-1].isdigit() or int(text[:-1]) < 1:
        raise argparse.ArgumentTypeError(f"not a duration like 24h, 90m or 2d: {text!r}")
    return dt.timedelta(seconds=int(text[:-1]) * units[text[-1]])


# -- local files --------------------------------------------------------------------------------


def data_settings(args: argparse.Namespace) -> Settings:
    """The settings of a command that only needs the data dir and the database."""
    return Settings(
        data_dir=args.data_dir.resolve(), database_url=env_default("REALNAME_DATABASE_URL")
    )


def read_input(path: Path, what: str) -> bytes:
    """The bytes of a file the user named; UsageError when it cannot be read."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read the {what} {path}: {exc.strerror}") from exc


# -- identity numbers ---------------------------------------------------------------------------

DOCUMENT_NUMBER_FILE: Final = "--document-number-file"
"""Where a verb reads an ID number from: a file, or ``-`` for standard input — never argv."""


class _RefusedOnArgv(argparse.Action):
    """``--document-number``: refused, so the number never sits in shell history or ``ps``."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        # The message must not repeat the value: it is the number.
        parser.error(
            "--document-number would put the ID number on the command line (shell history, ps): "
            f"give {DOCUMENT_NUMBER_FILE} PATH, or {DOCUMENT_NUMBER_FILE} - to read it from "
            "standard input, or leave both out to be prompted on a terminal"
        )


def add_document_number_argument(parser: argparse.ArgumentParser, help_text: str = "") -> None:
    """``--document-number-file PATH`` (``-``: standard input); read with :func:`document_number`.

    Without it, the number is asked on the terminal without echo. ``--document-number NUMBER``
    is refused with a message pointing here (declared, so argparse does not take it for an
    abbreviation of ``--document-number-file``).
    """
    detail = f" ({help_text})" if help_text else ""
    parser.add_argument(
        DOCUMENT_NUMBER_FILE,
        dest="document_number_file",
        metavar="PATH",
        help=f"a file holding the ID number{detail}; - reads standard input; left out, "
        "a terminal prompts without echo",
    )
    parser.add_argument("--document-number", action=_RefusedOnArgv, help=argparse.SUPPRESS)


def document_number(args: argparse.Namespace) -> str:
    """The ID number of ``--document-number-file`` (or stdin, or a prompt); UsageError if none."""
    source: str | None = args.document_number_file
    if source == "-":
        text = sys.stdin.read()
    elif source is not None:
        text = read_input(Path(source), "document number file").decode("utf-8", "replace")
    elif sys.stdin.isatty():
        text = getpass.getpass("ID document number: ")
    else:
        raise UsageError(
            f"give the ID number with {DOCUMENT_NUMBER_FILE} PATH or {DOCUMENT_NUMBER_FILE} - "
            "(standard input), or run on a terminal to be prompted"
        )
    number = text.strip()
    if not number:
        raise UsageError("no ID document number was given")
    if "\n" in number:
        raise UsageError("give one ID document number, on one line")
    return number


def write_private_key(
    path: Path, key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
) -> None:
    """Writes an unencrypted private key PEM with mode 0600 (refuses to overwrite)."""
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # O_EXCL with the mode: the key is never readable by others, not even for an instant.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)


def print_message(message: Message) -> None:
    """Prints a protobuf message as indented JSON with the proto field names."""
    print(json_format.MessageToJson(message, preserving_proto_field_name=True, indent=2))


# -- the server ---------------------------------------------------------------------------------

ADDRESS_HELP: Final = "the server's gRPC address (env REALNAME_GRPC_ADDRESS)"
PRINCIPAL_HELP: Final = (
    "the principal to call as: its client certificate in DATA_DIR/dev-pki/clients/"
)


def add_address_argument(
    parser: argparse.ArgumentParser, help_text: str | None = ADDRESS_HELP
) -> None:
    """``--address`` (env REALNAME_GRPC_ADDRESS), the server to call."""
    default = env_default("REALNAME_GRPC_ADDRESS", DEFAULT_GRPC_ADDRESS)
    parser.add_argument("--address", default=default, help=help_text)


def add_principal_argument(
    parser: argparse.ArgumentParser, principal: str | None = None, help_text: str = PRINCIPAL_HELP
) -> None:
    """``--as``: whose client certificate to present (required when there is no default)."""
    parser.add_argument(
        "--as", dest="principal", default=principal, required=principal is None, help=help_text
    )


def add_client_arguments(
    parser: argparse.ArgumentParser,
    principal: str | None = None,
    *,
    principal_help: str = PRINCIPAL_HELP,
    address_help: str | None = ADDRESS_HELP,
) -> None:
    """``--data-dir``, ``--address`` and ``--as``: what :func:`client_channel` reads."""
    add_data_dir_argument(parser)
    add_address_argument(parser, address_help)
    add_principal_argument(parser, principal, principal_help)


def client_channel(args: argparse.Namespace) -> grpc.Channel:
    """An mTLS channel to ``--address`` as ``--as``, with the data dir's dev client certificate."""
    pki = data_settings(args).pki_dir
    client = pki / "clients"
    try:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=(pki / "ca.pem").read_bytes(),
            private_key=(client / f"{args.principal}.key").read_bytes(),
            certificate_chain=(client / f"{args.principal}.pem").read_bytes(),
        )
    except FileNotFoundError as exc:
        raise UsageError(f"no client certificate for {args.principal}: {exc.filename}") from exc
    # The dev server certificate names localhost and 127.0.0.1.
    return grpc.secure_channel(
        args.address, credentials, [("grpc.ssl_target_name_override", "localhost")]
    )


def call_server(args: argparse.Namespace, rpc: Callable[[grpc.Channel], T]) -> T:
    """Runs ``rpc`` on a fresh :func:`client_channel`, closed afterwards."""
    with client_channel(args) as channel:
        return rpc(channel)


# -- errors -------------------------------------------------------------------------------------


def describe_rpc_error(exc: grpc.RpcError) -> str:
    """A failed call's status, reason, metadata and field violations, one per line."""
    call: Any = exc
    lines = [f"ERROR: {call.code().name}: {call.details()}"]
    status = rpc_status.from_call(call)
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            lines.append(f"reason: {info.reason}")
            if info.metadata:
                lines.append(f"metadata: {json.dumps(dict(info.metadata), sort_keys=True)}")
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            lines.extend(f"field {v.field}: {v.description}" for v in bad.field_violations)
    return "\n".join(lines)


def guard(command: Command, *usage_errors: type[Exception]) -> Command:
    """Runs a command; an RPC error exits EXIT_FAILED, a usage error EXIT_USAGE, with a message."""
    # UsageError and OSError (a file named on the command line) are usage errors everywhere.
    caught: tuple[type[Exception], ...] = (UsageError, OSError, *usage_errors)

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except grpc.RpcError as exc:
            print(describe_rpc_error(exc), file=sys.stderr)
            return EXIT_FAILED
        except caught as exc:
            print(f"realname: {exc}", file=sys.stderr)
            return EXIT_USAGE

    return run


# -- command groups -----------------------------------------------------------------------------


def command_group(subparsers: SubParsers, name: str, help_text: str) -> SubParsers:
    """The subcommands of the group ``name``, creating it (with ``help_text``) on first use."""
    # Modules adding verbs to one group all ask here, so their registration order does not matter.
    group = subparsers.choices.get(name)
    if group is None:
        group = subparsers.add_parser(name, help=help_text)
        return group.add_subparsers(dest=f"{name}_command", required=True)
    for action in group._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise RuntimeError(f"the {name} command has no subcommands")  # pragma: no cover


def report_subparsers(subparsers: SubParsers) -> SubParsers:
    """The subcommands of `realname report`, creating the `report` command on first use."""
    return command_group(subparsers, "report", "reports from the database")
