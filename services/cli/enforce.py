"""`realname enforce ...`: the regulator's enforcement records, on the database (its own desk).

``record --revoke-ca`` also revokes the operator's authorization CA with the regulator's root
key (the same offline key `realname ca revoke-operator` uses), in the same command.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import TypeVar

from registry.authz import authorities
from registry.authz.errors import RegistryError
from registry.pki.errors import PkiError
from services.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    REASONS,
    SubParsers,
    command_group,
    data_settings,
)
from services.domain.errors import RealnameError
from services.domain.records import ActionRow
from services.features.enforcement import EnforcementDesk, EnforcementKind, Standing
from services.runtime.ca_material import key_directory
from services.runtime.config import add_data_dir_argument
from services.storage.database import Database

T = TypeVar("T")

_KINDS = {k.name.lower().replace("_", "-"): k for k in EnforcementKind}


def _action_json(action: ActionRow) -> dict[str, object]:
    return {
        "action_id": str(action.id),
        "operator": action.operator_id,
        "kind": action.kind,
        "amount_yuan": action.amount_yuan,
        "reason": action.reason,
        "recorded_at": action.recorded_at.isoformat(),
        "lifted_at": None if action.lifted_at is None else action.lifted_at.isoformat(),
        "ca_revoked": action.ca_revoked,
    }


def _standing_json(standing: Standing) -> dict[str, object]:
    return {
        "operator": standing.operator,
        "kind": standing.kind,
        "warnings": standing.warnings,
        "fines": standing.fines,
        "fines_total_yuan": standing.fines_total_yuan,
        "suspensions": standing.suspensions,
        "activation_suspended": standing.activation_suspended,
        "ca_revoked": standing.ca_revoked,
        "licence_status": standing.licence_status,
    }


def cmd_record(args: argparse.Namespace) -> int:
    """Record an action; with --revoke-ca, revoke the operator's authorization CA too."""
    settings = data_settings(args)
    db = Database(settings.database())
    try:
        desk = EnforcementDesk(db)
        if args.revoke_ca:
            root = key_directory(settings.data_dir).load_root()
            reason = int(REASONS[args.ca_reason])
            revoked = db.write(
                lambda conn: authorities.revoke_operator_ca(
                    conn, root, args.operator, reason_code=reason
                )
            )
            print(f"revoked {len(revoked)} CA generation(s) of {args.operator}", file=sys.stderr)
        action, standing = desk.record(
            "regulator",
            args.operator,
            _KINDS[args.kind],
            args.amount,
            args.reason,
            ca_revoked=args.revoke_ca,
        )
    except (RealnameError, RegistryError, PkiError, OSError) as exc:
        print(f"realname enforce: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        db.dispose()
    print(json.dumps({"action": _action_json(action), "standing": _standing_json(standing)}))
    return EXIT_OK


def _on_desk(args: argparse.Namespace, work: Callable[[EnforcementDesk], T]) -> T | None:
    """Run ``work`` on the enforcement desk of the data directory; None (reported) on refusal."""
    db = Database(data_settings(args).database())
    try:
        return work(EnforcementDesk(db))
    except RealnameError as exc:
        print(f"realname enforce: {exc}", file=sys.stderr)
        return None
    finally:
        db.dispose()


def cmd_lift(args: argparse.Namespace) -> int:
    """Lift an activation suspension."""
    lifted = _on_desk(args, lambda desk: desk.lift(args.action_id))
    if lifted is None:
        return EXIT_FAILED
    action, standing = lifted
    print(json.dumps({"action": _action_json(action), "standing": _standing_json(standing)}))
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    """Print actions and standings (one operator's, or everyone's)."""
    listed = _on_desk(args, lambda desk: desk.list(args.operator))
    if listed is None:
        return EXIT_FAILED
    actions, standings = listed
    out = {
        "actions": [_action_json(a) for a in actions],
        "standings": [_standing_json(s) for s in standings],
    }
    print(json.dumps(out, indent=2))
    return EXIT_OK


def register(subparsers: SubParsers) -> None:
    """Adds `realname enforce record|lift|list`."""
    sub = command_group(subparsers, "enforce", "the regulator's enforcement records")
    rec = sub.add_parser("record", help="record a warning, a fine or an activation suspension")
    add_data_dir_argument(rec)
    rec.add_argument("--operator", required=True)
    rec.add_argument("--kind", choices=sorted(_KINDS), required=True)
    rec.add_argument("--amount", type=int, default=0, help="yuan, for a fine (10000-30000)")
    rec.add_argument("--reason", required=True)
    rec.add_argument(
        "--revoke-ca",
        action="store_true",
        help="also revoke the operator's authorization CA (needs the regulator root key)",
    )
    rec.add_argument("--ca-reason", choices=sorted(REASONS), default="privilege-withdrawn")
    rec.set_defaults(func=cmd_record)
    lift = sub.add_parser("lift", help="lift an activation suspension")
    add_data_dir_argument(lift)
    lift.add_argument("action_id")
    lift.set_defaults(func=cmd_lift)
    lst = sub.add_parser("list", help="actions and standings")
    add_data_dir_argument(lst)
    lst.add_argument("--operator")
    lst.set_defaults(func=cmd_list)
