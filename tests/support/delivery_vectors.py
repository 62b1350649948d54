"""Shared shipment-token / delivery-bundle vectors: one bundle, tokens, and the expected verdicts.

Writes ``tests/vectors/delivery/`` (``bundle.json``, a ``realname-delivery-bundle`` as
``realname bundle export`` writes it, and ``vectors.json``), for every offline verifier to agree
on: the Python one (``registry.delivery.offline``) and any other (a browser's). Each case is a
token in its text form, the document presented at the door, the courier company checking, the
moment of the check and the stale-bundle policy, and the expected verdict with its
``stale_bundle`` flag. The moments are fixed (around :data:`NOW`), so the vectors stay valid
forever; every certificate, CRL and the bundle are made for that time.

The world is real: a regulator root, operator CAs, store certificates and CRLs from
``registry.pki``, issuance entries in a Merkle log with an Ed25519-signed checkpoint, tokens
signed by ``registry.delivery.token`` (or, for the versions and costs it refuses to write, by
``tests.support.tokens`` exactly as a store would sign them). Document numbers are the synthetic
ones of ``tests.support.identities``; no real-looking number appears anywhere else.

Usage::

    .venv/bin/python -m tests.support.delivery_vectors            # (re)write the vectors
    .venv/bin/python -m tests.support.delivery_vectors --check    # exit 1 if they drifted

Bytes cannot be compared between two generations: the CA and store keys are fresh, and so are
the certificate serials and the CAs' ECDSA signatures (``registry.pki`` draws them). What is
compared (:func:`drift`) is everything else: the case list, every document, courier, moment,
policy and expected verdict, the bundle's times; and the committed tokens must still get those
verdicts from the Python verifier against the committed bundle (:func:`problems`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from registry.checkpoint import Checkpoint, sign_checkpoint
from registry.delivery import DeliveryBundle, Reason, encode_text, sign_shipment
from registry.delivery.bundle import LoggedCertificate
from registry.delivery.commitment import Kdf, KdfParams
from registry.delivery.errors import DeliveryBundleError, TokenDecodeError
from registry.delivery.offline import OfflineVerifier
from registry.delivery.token import decode_text, decode_token
from registry.pki.keys import generate_private_key
from registry.pki.revocation import Revocation
from registry.subscribers import DocumentType
from tests.support.identities import resident_id
from tests.support.paths import VECTORS_DIR
from tests.support.tokens import as_version_1, with_params
from tests.unit.registry.delivery.support import (
    COURIER,
    ORIGIN,
    Delivery,
    log_signer,
    make_delivery,
    witness_signer,
)

OUT_DIR = VECTORS_DIR / "delivery"
FORMAT = "realname-delivery-vectors"
VERSION = 1
NOW = dt.datetime(2026, 6, 1, 8, 0, 0, tzinfo=dt.UTC)
"""The world's present: certificates, CRLs and the bundle are made for it."""

RECIPIENT = resident_id(902)  # synthetic, check character X
STRANGER = resident_id(903)
PASSPORT = "G93751046"  # synthetic, as in recipient-commitment.json
_TIME = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True)
class Case:
    """One vector: a token, what is presented and when, and the verdict expected."""

    name: str
    description: str
    token: str
    expect: Reason
    number: str = RECIPIENT
    doc_type: DocumentType = DocumentType.RESIDENT_ID_CARD
    courier: str = COURIER
    at: dt.datetime = NOW
    stale_policy: str = "refuse"
    stale_bundle: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "token": self.token,
            "document_type": int(self.doc_type),
            "document_type_name": self.doc_type.name,
            "document_number": self.number,
            "courier_company": self.courier,
            "at": self.at.strftime(_TIME),
            "stale_policy": self.stale_policy,
            "expect": {"verdict": str(self.expect), "stale_bundle": self.stale_bundle},
        }


def _text(token: bytes) -> str:
    return encode_text(token)


@dataclass(frozen=True)
class Extra:
    """Stores beyond the unit tests' world, logged like the others: past and future validity,
    and one under an operator CA the regulator revoked."""

    expired: x509.Certificate
    not_yet_valid: x509.Certificate
    under_revoked_ca: x509.Certificate


def _extend(world: Delivery) -> tuple[Extra, dict[str, DeliveryBundle]]:
    """Issue and log the extra stores; return them and the bundles, the main one first."""
    extra = Extra(
        # Valid for 365 days from 400 days ago.
        expired=world.pki.issue("cmcc", shop_id="shop-5005", now=NOW - dt.timedelta(days=400)),
        not_yet_valid=world.pki.issue("cmcc", shop_id="shop-6006", now=NOW + dt.timedelta(days=1)),
        under_revoked_ca=world.pki.issue("vno1", shop_id="shop-7007"),
    )
    indices = [
        world.log.log_issuance(certificate, NOW - dt.timedelta(days=1))
        for certificate in (extra.expired, extra.not_yet_valid, extra.under_revoked_ca)
    ]
    revoked_ca = world.pki.operators["vno1"].certificate.serial_number
    crls = world.crls(
        root_revocations=[
            Revocation(
                revoked_ca, NOW - dt.timedelta(days=3), x509.ReasonFlags.cessation_of_operation
            )
        ]
    )
    stores = world.logged_stores() + [world.log.logged(index) for index in indices]
    return extra, _bundles(world, crls, stores)


def _bundles(
    world: Delivery, crls: list[x509.CertificateRevocationList], stores: list[LoggedCertificate]
) -> dict[str, DeliveryBundle]:
    """The main bundle, and variants of it that differ only in their log part."""
    one, two = witness_signer(1), witness_signer(2)
    size = world.log.tree.size
    head = Checkpoint(ORIGIN, size, world.log.tree.root(size))
    signed = world.log.checkpoint()
    # The tree size is the checkpoint's second line: a smaller one no longer matches the signature.
    tampered = signed.replace(f"\n{size}\n".encode(), f"\n{size - 1}\n".encode(), 1)

    def bundle(**log: Any) -> DeliveryBundle:
        return world.bundle(crls=crls, stores=stores, **log)

    return {
        "bundle.json": bundle(),
        "bundle-witnessed.json": bundle(
            checkpoint=world.log.checkpoint(one),
            witness_keys=[one.verifier().verifier_key],
            witness_threshold=1,
        ),
        "bundle-too-few-cosignatures.json": bundle(
            checkpoint=world.log.checkpoint(one),
            witness_keys=[one.verifier().verifier_key, two.verifier().verifier_key],
            witness_threshold=2,
        ),
        "bundle-other-log-key.json": bundle(checkpoint=sign_checkpoint(head, log_signer(8))),
        "bundle-tampered-checkpoint.json": bundle(checkpoint=tampered),
    }


# Each variant bundle, whether a verifier must accept it, and why (the main bundle is accepted).
BUNDLE_CASES = (
    ("bundle-witnessed.json", True, "the checkpoint cosigned by the one witness required"),
    ("bundle-too-few-cosignatures.json", False, "2 of 2 witnesses required, 1 cosigned"),
    ("bundle-other-log-key.json", False, "the checkpoint is signed by a key that is not the log's"),
    ("bundle-tampered-checkpoint.json", False, "the checkpoint's tree size changed after signing"),
)


def _cases(world: Delivery, extra: Extra, bundle: DeliveryBundle) -> list[Case]:
    key = world.store_key
    good = world.token(number=RECIPIENT)
    text = _text(good)
    fresh_until = bundle.fresh_until
    near_expiry = world.fields(number=RECIPIENT, valid_for=dt.timedelta(hours=2, minutes=30))
    waybill = b"SF1234567890123"
    unknown = replace(world.fields(number=RECIPIENT), store_serial=0x7ABCDEF1)
    cases = [
        Case("ok", "authorized, logged store; the right courier and recipient", text, Reason.OK),
        Case(
            "ok_number_spelled_loosely",
            "the same number with spaces, a dash and a lower-case x: normalised before hashing",
            text,
            Reason.OK,
            number=f"{RECIPIENT[:6]} {RECIPIENT[6:14]}-{RECIPIENT[14:].lower()}",
        ),
        Case(
            "ok_passport",
            "a token committed to a passport, the passport presented",
            _text(world.token(number=PASSPORT, doc_type=DocumentType.PASSPORT)),
            Reason.OK,
            number=PASSPORT,
            doc_type=DocumentType.PASSPORT,
        ),
        Case(
            "recipient_mismatch",
            "another person's document",
            text,
            Reason.RECIPIENT_MISMATCH,
            number=STRANGER,
        ),
        Case(
            "recipient_mismatch_document_type",
            "the right number under another document type",
            text,
            Reason.RECIPIENT_MISMATCH,
            doc_type=DocumentType.PASSPORT,
        ),
        Case(
            "bad_signature_other_key",
            "signed by a key that is not the named store's",
            _text(world.token(number=RECIPIENT, key=generate_private_key())),
            Reason.BAD_SIGNATURE,
        ),
        Case(
            "bad_signature_tampered",
            "the good token with one digit of its waybill changed",
            _text(good.replace(waybill, waybill[:-1] + b"4", 1)),
            Reason.BAD_SIGNATURE,
        ),
        Case(
            "bad_signature_truncated",
            "the good token without its last two bytes (the signature cut short)",
            _text(good[:-2]),
            Reason.BAD_SIGNATURE,
        ),
        Case(
            "bad_signature_not_base45",
            "text that is not a token's text form",
            "RN1:not a token",
            Reason.BAD_SIGNATURE,
        ),
        Case(
            "bad_signature_version_1",
            "token version 1 (a guessable SHA-256 commitment), properly signed: refused",
            _text(as_version_1(good, key, doc_type=1, number=RECIPIENT)),
            Reason.BAD_SIGNATURE,
        ),
        Case(
            "bad_signature_weak_commitment",
            "Argon2id parameters under the floor (m=256 KiB, t=3), properly signed: refused",
            _text(
                with_params(
                    good, key, KdfParams(Kdf.ARGON2ID, 256, 3, 1), doc_type=1, number=RECIPIENT
                )
            ),
            Reason.BAD_SIGNATURE,
        ),
        Case(
            "seller_not_authorized_unknown_serial",
            "a store serial the bundle does not hold",
            _text(sign_shipment(unknown, key)),
            Reason.SELLER_NOT_AUTHORIZED,
        ),
        Case(
            "seller_not_authorized_other_operator",
            "a genuine store's serial under another operator's name",
            _text(world.token(number=RECIPIENT, operator="cucc")),
            Reason.SELLER_NOT_AUTHORIZED,
        ),
        Case(
            "seller_not_authorized_unlogged",
            "a store certificate whose inclusion proof does not hold (not in the log)",
            _text(world.token(world.unlogged, number=RECIPIENT)),
            Reason.SELLER_NOT_AUTHORIZED,
        ),
        Case(
            "seller_not_authorized_unknown_ca",
            "a logged store certificate from an operator CA the bundle does not trust",
            _text(world.token(world.outsider, number=RECIPIENT)),
            Reason.SELLER_NOT_AUTHORIZED,
        ),
        Case(
            "seller_not_authorized_expired",
            "a logged store certificate that expired 35 days ago",
            _text(world.token(extra.expired, number=RECIPIENT)),
            Reason.SELLER_NOT_AUTHORIZED,
        ),
        Case(
            "seller_not_authorized_not_yet_valid",
            "a logged store certificate valid only from tomorrow",
            _text(world.token(extra.not_yet_valid, number=RECIPIENT)),
            Reason.SELLER_NOT_AUTHORIZED,
        ),
        Case(
            "seller_revoked_operator_ca",
            "a store of an operator whose CA is on the regulator root's CRL",
            _text(world.token(extra.under_revoked_ca, number=RECIPIENT)),
            Reason.SELLER_REVOKED,
        ),
        Case(
            "seller_revoked",
            "a store whose certificate is on its operator's CRL",
            _text(world.token(world.revoked, number=RECIPIENT)),
            Reason.SELLER_REVOKED,
        ),
        Case(
            "seller_revoked_clock_behind",
            "the revoked store with the device clock 10 days behind: the check time is raised "
            "to the bundle's issued_at, so the revocation still counts",
            _text(world.token(world.revoked, number=RECIPIENT)),
            Reason.SELLER_REVOKED,
            at=NOW - dt.timedelta(days=10),
        ),
        Case(
            "token_expired",
            "a token issued 20 days ago for 15 days",
            _text(
                world.token(
                    number=RECIPIENT,
                    issued_at=NOW - dt.timedelta(days=20),
                    valid_for=dt.timedelta(days=15),
                )
            ),
            Reason.TOKEN_EXPIRED,
        ),
        Case(
            "token_expired_at_expiry",
            "checked at the very second the token expires (expiry is exclusive)",
            _text(sign_shipment(near_expiry, key)),
            Reason.TOKEN_EXPIRED,
            at=near_expiry.expires_at,
        ),
        Case(
            "ok_second_before_expiry",
            "the same token one second earlier",
            _text(sign_shipment(near_expiry, key)),
            Reason.OK,
            at=near_expiry.expires_at - dt.timedelta(seconds=1),
        ),
        Case(
            "wrong_courier",
            "a token for another courier company",
            _text(world.token(number=RECIPIENT, courier="jd-logistics")),
            Reason.WRONG_COURIER,
        ),
        Case(
            "ok_last_fresh_second",
            "at the bundle's last fresh second, under the refuse policy",
            text,
            Reason.OK,
            at=fresh_until,
        ),
        Case(
            "stale_bundle",
            "one second after the bundle's freshness, under the refuse policy",
            text,
            Reason.STALE_BUNDLE,
            at=fresh_until + dt.timedelta(seconds=1),
            stale_bundle=True,
        ),
        Case(
            "stale_bundle_warned",
            "the same moment under the warn policy: checked, and flagged stale",
            text,
            Reason.OK,
            at=fresh_until + dt.timedelta(seconds=1),
            stale_policy="warn",
            stale_bundle=True,
        ),
    ]
    return cases


def _pins(bundle: DeliveryBundle) -> dict[str, Any]:
    root = bundle.trust.root.public_bytes(serialization.Encoding.DER)
    return {"root_sha256": hashlib.sha256(root).hexdigest(), "log_keys": list(bundle.log_keys)}


Vectors = tuple[bytes, dict[str, Any], dict[str, bytes]]
"""The main bundle's JSON, the vectors document, and the variant bundles' JSON by file name."""


def generate() -> Vectors:
    """Make a new world; return its bundles' JSON and the vectors document."""
    world = make_delivery(NOW)
    extra, bundles = _extend(world)
    bundle = bundles["bundle.json"]
    cases = _cases(world, extra, bundle)
    document = {
        "format": FORMAT,
        "version": VERSION,
        "generator": "python -m tests.support.delivery_vectors",
        "spec": "registry/delivery/token.py, bundle.py, checks.py, offline.py; docs/couriers.md",
        "bundle": "bundle.json",
        "bundle_issued_at": bundle.issued_at.strftime(_TIME),
        "bundle_fresh_until": bundle.fresh_until.strftime(_TIME),
        "pins": _pins(bundle),
        "cases": [case.to_json() for case in cases],
        "bundle_cases": [
            {
                "name": name.removesuffix(".json"),
                "description": description,
                "bundle": name,
                "accepted": accepted,
                "then": "the ok case's token and document give OK" if accepted else None,
            }
            for name, accepted, description in BUNDLE_CASES
        ],
    }
    extras = {name: variant.to_json() for name, variant in bundles.items() if name != "bundle.json"}
    return bundle.to_json(), document, extras


def verdict_of(verifier: OfflineVerifier, case: dict[str, Any]) -> tuple[str, bool]:
    """The Python offline verifier's (verdict, stale_bundle) for one vector."""
    verdict = verifier.verify(
        case["token"],
        case["document_type"],
        case["document_number"],
        courier_company=case["courier_company"],
        at=dt.datetime.strptime(case["at"], _TIME).replace(tzinfo=dt.UTC),
        stale_policy=case["stale_policy"],
    )
    return str(verdict.reason), verdict.stale_bundle


def verifier_of(bundle_json: bytes, document: dict[str, Any]) -> OfflineVerifier:
    """The bundle, verified against the vectors' pins (not its own anchors)."""
    pins = document["pins"]
    return OfflineVerifier(
        DeliveryBundle.from_json(bundle_json),
        pinned_root_sha256=bytes.fromhex(pins["root_sha256"]),
        pinned_log_keys=pins["log_keys"],
    )


def problems(
    bundle_json: bytes, document: dict[str, Any], extras: dict[str, bytes] | None = None
) -> list[str]:
    """Every vector whose verdict from the Python verifier is not the expected one.

    With ``extras`` (the variant bundles), also every bundle case accepted or refused wrongly.
    """
    verifier = verifier_of(bundle_json, document)
    found = []
    for case in document["cases"]:
        expected = (case["expect"]["verdict"], case["expect"]["stale_bundle"])
        got = verdict_of(verifier, case)
        if got != expected:
            found.append(f"{case['name']}: expected {expected}, got {got}")
    if extras is None:
        return found
    ok = next(case for case in document["cases"] if case["name"] == "ok")
    for case in document.get("bundle_cases", []):
        try:
            variant = verifier_of(extras[case["bundle"]], document)
        except DeliveryBundleError as error:
            if case["accepted"]:
                found.append(f"{case['name']}: expected accepted, refused ({error})")
            continue
        if not case["accepted"]:
            found.append(f"{case['name']}: expected refused, accepted")
        elif verdict_of(variant, ok) != ("OK", False):
            found.append(f"{case['name']}: the ok case is not OK against it")
    return found


def skeleton(document: dict[str, Any]) -> dict[str, Any]:
    """The vectors without what differs between two generations (tokens, pins)."""
    return {
        **{key: value for key, value in document.items() if key not in ("cases", "pins")},
        "cases": [{k: v for k, v in case.items() if k != "token"} for case in document["cases"]],
    }


def drift(committed: dict[str, Any], fresh: dict[str, Any]) -> list[str]:
    """Where the committed vectors differ from a fresh generation, beyond keys and signatures."""
    old, new = skeleton(committed), skeleton(fresh)
    found = [
        f"{key}: committed {old.get(key)!r}, generated {new.get(key)!r}"
        for key in sorted(set(old) | set(new))
        if key != "cases" and old.get(key) != new.get(key)
    ]
    old_cases = {case["name"]: case for case in old["cases"]}
    new_cases = {case["name"]: case for case in new["cases"]}
    if list(old_cases) != list(new_cases):
        found.append(f"cases: committed {list(old_cases)}, generated {list(new_cases)}")
    for name in old_cases.keys() & new_cases.keys():
        if old_cases[name] != new_cases[name]:
            found.append(f"{name}: committed {old_cases[name]}, generated {new_cases[name]}")
    # Each committed token still names what a fresh one would (all but serial, salt, signature).
    for case, made in zip(committed["cases"], fresh["cases"], strict=False):
        if _shape(case["token"]) != _shape(made["token"]):
            found.append(f"{case['name']}: the committed token's fields differ from a fresh one")
    return found


def _shape(text: str) -> object:
    """A token's fields that do not depend on the world's keys, or why it does not decode."""
    try:
        fields = decode_token(decode_text(text)).fields
    except TokenDecodeError as error:  # a deliberately broken vector: compare how it breaks
        return ("undecodable", type(error).__name__)
    return (
        fields.order_id,
        fields.waybill,
        fields.courier,
        fields.iccid,
        fields.msisdn_masked,
        fields.operator,
        fields.issued_at,
        fields.expires_at,
        fields.kdf,
    )


def write(
    out: Path, bundle_json: bytes, document: dict[str, Any], extras: dict[str, bytes]
) -> None:
    """Write the bundles and the vectors into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "bundle.json").write_bytes(bundle_json)
    for name, data in extras.items():
        (out / name).write_bytes(data)
    text = json.dumps(document, indent=1, ensure_ascii=False) + "\n"
    (out / "vectors.json").write_text(text, encoding="utf-8")


def load(out: Path) -> Vectors:
    """Read the bundles and the vectors from ``out``."""
    document: dict[str, Any] = json.loads((out / "vectors.json").read_text(encoding="utf-8"))
    extras = {
        case["bundle"]: (out / case["bundle"]).read_bytes()
        for case in document.get("bundle_cases", [])
    }
    return (out / document["bundle"]).read_bytes(), document, extras


def check(out: Path = OUT_DIR, make: Callable[[], Vectors] = generate) -> list[str]:
    """Every problem with the committed vectors: wrong verdicts, and drift from the generator."""
    bundle_json, committed, extras = load(out)
    return problems(bundle_json, committed, extras) + drift(committed, make()[1])


def main(argv: list[str] | None = None) -> int:
    """Write the vectors, or with ``--check`` report problems and exit 1 if there are any."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args(argv)
    if args.check:
        found = check(args.out)
        for problem in found:
            print(problem, file=sys.stderr)
        print(f"{len(found)} problems in {args.out}")
        return 1 if found else 0
    bundle_json, document, extras = generate()
    found = problems(bundle_json, document, extras)
    if found:  # never write vectors that contradict the verifier
        for problem in found:
            print(problem, file=sys.stderr)
        return 1
    write(args.out, bundle_json, document, extras)
    print(f"wrote {len(document['cases'])} vectors to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
