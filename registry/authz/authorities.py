"""The CAs and their CRLs in the database: root, operator CA generations, re-signing, bundles.

Who holds which key:

* the regulator root's key is a file (see :mod:`registry.authz.keyfiles`), loaded only by the
  steps that certify or revoke an operator CA and to re-sign the root CRL; the database holds
  only its certificate;
* operator CA keys are in ``authz_cas.encrypted_key`` as encrypted PKCS#8, opened in memory by an
  :class:`OperatorKeys` given the passphrase; they sign store certificates, their operator's CRL
  and OCSP responses.

CRLs are re-signed inside the transaction that changes what they list (so a revocation and its
CRL commit together) and when they age past :data:`CRL_REFRESH_AFTER` (by :func:`refresh_crls`).
Every such change bumps ``authz_state.generation``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import Connection, Row, and_, func, insert, select, update

from registry.authz.errors import (
    ConcurrentUpdateError,
    KeysUnavailableError,
    NotFoundError,
    StateError,
)
from registry.authz.records import CaRecord, serial_hex
from registry.authz.tables import (
    AUTH_REVOKED,
    CA_CURRENT,
    CA_RETIRED,
    ROOT_ISSUER,
    STATE_ID,
    authz_authorizations,
    authz_cas,
    authz_crls,
    authz_state,
)
from registry.clock import as_utc
from registry.log.entries import OperatorCaAdded, OperatorCaRevoked, OperatorCaRotated
from registry.log.storage import append_entry
from registry.pki import authority as pki_authority
from registry.pki.authority import CertificateAuthority
from registry.pki.bundle import TrustBundle
from registry.pki.identifiers import subject_key_id
from registry.pki.keys import Passphrase, decrypt_private_key, encrypt_private_key
from registry.pki.operators import OperatorKind, validate_operator_id
from registry.pki.revocation import Revocation, build_crl, reason_from_code

OPERATOR_CRL_LIFETIME: Final = dt.timedelta(days=1)
"""thisUpdate to nextUpdate of an operator CRL."""

ROOT_CRL_LIFETIME: Final = dt.timedelta(days=7)
"""thisUpdate to nextUpdate of the root CRL: longer, because its key may be offline for a while."""

CRL_REFRESH_AFTER: Final = dt.timedelta(hours=12)
"""Age after which a CRL is re-signed even if nothing changed (so: at least daily)."""

EXPIRED_ENTRY_GRACE: Final = dt.timedelta(days=1)
"""How long an expired certificate stays on its CRL (RFC 5280 5.1.2.6: one CRL past expiry)."""

_DER = serialization.Encoding.DER


def utc(value: dt.datetime) -> dt.datetime:
    """A stored timestamp as aware UTC (SQLite hands back naive values)."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def second(now: dt.datetime | None) -> dt.datetime:
    """``now`` (default: the clock) in UTC truncated to seconds, the resolution of certificates."""
    return as_utc(now).replace(microsecond=0)


def bump_generation(conn: Connection) -> int:
    """Advance ``authz_state.generation`` in the caller's transaction; return the new value."""
    conn.execute(
        update(authz_state)
        .where(authz_state.c.id == STATE_ID)
        .values(generation=authz_state.c.generation + 1)
    )
    return current_generation(conn)


def current_generation(conn: Connection) -> int:
    """The generation of the registry's revocation state."""
    return int(
        conn.execute(
            select(authz_state.c.generation).where(authz_state.c.id == STATE_ID)
        ).scalar_one()
    )


def _ca_record(row: Row[tuple[object, ...]]) -> CaRecord:
    m = row._mapping
    revoked_at = m["revoked_at"]
    return CaRecord(
        id=int(m["id"]),
        issuer=str(m["issuer"]),
        generation=int(m["generation"]),
        certificate=bytes(m["certificate"]),
        key_id=bytes(m["key_id"]),
        serial_hex=str(m["serial_hex"]),
        not_before=utc(m["not_before"]),
        not_after=utc(m["not_after"]),
        status=str(m["status"]),
        revoked_at=utc(revoked_at) if revoked_at is not None else None,
        revocation_reason=m["revocation_reason"],
    )


_CA_COLUMNS = [c for c in authz_cas.c if c.name != "encrypted_key"]


def ca_generations(conn: Connection, issuer: str) -> list[CaRecord]:
    """Every generation of ``issuer`` (``root`` or an operator), oldest first."""
    rows = conn.execute(
        select(*_CA_COLUMNS).where(authz_cas.c.issuer == issuer).order_by(authz_cas.c.generation)
    )
    return [_ca_record(row) for row in rows]


def all_cas(conn: Connection) -> list[CaRecord]:
    """Every CA generation of every issuer."""
    rows = conn.execute(select(*_CA_COLUMNS).order_by(authz_cas.c.issuer, authz_cas.c.generation))
    return [_ca_record(row) for row in rows]


def current_ca(conn: Connection, issuer: str) -> CaRecord | None:
    """The current generation of ``issuer``, if it has one."""
    row = conn.execute(
        select(*_CA_COLUMNS).where(authz_cas.c.issuer == issuer, authz_cas.c.status == CA_CURRENT)
    ).one_or_none()
    return None if row is None else _ca_record(row)


def root_record(conn: Connection) -> CaRecord | None:
    """The regulator root's record, if the root was installed."""
    return current_ca(conn, ROOT_ISSUER)


class OperatorKeys:
    """Opens operator CA keys stored encrypted, once per process and generation."""

    def __init__(self, passphrase: Passphrase | None) -> None:
        self._passphrase = passphrase
        self._lock = threading.Lock()
        self._opened: dict[int, CertificateAuthority] = {}

    @property
    def available(self) -> bool:
        """Whether a passphrase was given, so keys can be opened at all."""
        return self._passphrase is not None

    @property
    def passphrase(self) -> Passphrase:
        """The passphrase that protects operator CA keys (raises when there is none)."""
        if self._passphrase is None:
            raise KeysUnavailableError(
                "no CA passphrase is configured (REALNAME_CA_PASSPHRASE or the dev passphrase "
                "file), so operator CA keys cannot be used"
            )
        return self._passphrase

    def authority(self, conn: Connection, ca_id: int) -> CertificateAuthority:
        """The CA of generation row ``ca_id`` with its private key opened."""
        with self._lock:
            cached = self._opened.get(ca_id)
        if cached is not None:
            return cached
        row = conn.execute(
            select(authz_cas.c.certificate, authz_cas.c.encrypted_key).where(
                authz_cas.c.id == ca_id
            )
        ).one_or_none()
        if row is None or row.encrypted_key is None:
            raise NotFoundError(f"no operator CA key for CA {ca_id}", reason="CA_NOT_FOUND")
        opened = CertificateAuthority(
            certificate=x509.load_der_x509_certificate(bytes(row.certificate)),
            private_key=decrypt_private_key(row.encrypted_key.encode("ascii"), self.passphrase),
        )
        with self._lock:
            self._opened[ca_id] = opened
        return opened


def _insert_ca(
    conn: Connection,
    issuer: str,
    *,
    generation: int,
    ca: CertificateAuthority,
    encrypted_key: bytes | None,
    now: dt.datetime,
) -> CaRecord:
    der = ca.certificate.public_bytes(_DER)
    key_id = subject_key_id(ca.certificate) or ca.key_id
    ca_id = conn.execute(
        insert(authz_cas)
        .values(
            issuer=issuer,
            generation=generation,
            certificate=der,
            key_id=key_id,
            serial_hex=serial_hex(ca.certificate.serial_number),
            encrypted_key=encrypted_key.decode("ascii") if encrypted_key is not None else None,
            not_before=ca.not_before,
            not_after=ca.not_after,
            status=CA_CURRENT,
            created_at=now,
        )
        .returning(authz_cas.c.id)
    ).scalar_one()
    return CaRecord(
        int(ca_id), issuer, generation, der, key_id,
        serial_hex(ca.certificate.serial_number), ca.not_before, ca.not_after, CA_CURRENT,
        None, None,
    )  # fmt: skip


def install_root(
    conn: Connection, root: CertificateAuthority, *, now: dt.datetime | None = None
) -> bool:
    """Record the regulator root and its first (empty) CRL; False if this root is already in.

    A database holds one root: installing another is refused.
    """
    moment = second(now)
    existing = root_record(conn)
    der = root.certificate.public_bytes(_DER)
    if existing is not None:
        if existing.certificate != der:
            raise StateError(
                "the database already holds another regulator root", reason="ROOT_MISMATCH"
            )
        return False
    _insert_ca(conn, ROOT_ISSUER, generation=1, ca=root, encrypted_key=None, now=moment)
    sign_crl(conn, ROOT_ISSUER, root, now=moment)
    return True


def _require_root(conn: Connection, root: CertificateAuthority) -> None:
    record = root_record(conn)
    if record is None:
        raise StateError("no regulator root is installed", reason="NO_ROOT")
    if record.certificate != root.certificate.public_bytes(_DER):
        raise StateError("this root key is not the database's root", reason="ROOT_MISMATCH")


def add_operator_ca(
    conn: Connection,
    root: CertificateAuthority,
    operator: str,
    passphrase: Passphrase,
    *,
    base_url: str,
    kind: OperatorKind | None = None,
    now: dt.datetime | None = None,
) -> CaRecord:
    """Certify a first CA for ``operator``, store its encrypted key, sign its CRL, log it."""
    moment = second(now)
    validate_operator_id(operator)
    _require_root(conn, root)
    if ca_generations(conn, operator):
        raise StateError(
            f"operator {operator} already has a CA; rotate or revoke it instead",
            reason="OPERATOR_CA_EXISTS",
        )
    ca = pki_authority.create_operator_ca(root, operator, kind=kind, now=moment, base_url=base_url)
    record = _insert_ca(
        conn,
        operator,
        generation=1,
        ca=ca,
        encrypted_key=encrypt_private_key(ca.private_key, passphrase),
        now=moment,
    )
    sign_crl(conn, operator, ca, now=moment)
    append_entry(conn, OperatorCaAdded(moment, operator, record.certificate))
    return record


def rotate_operator_ca(
    conn: Connection,
    root: CertificateAuthority,
    operator: str,
    passphrase: Passphrase,
    *,
    base_url: str,
    now: dt.datetime | None = None,
) -> CaRecord:
    """Certify a new key for ``operator``'s CA; the old generation stays valid for its certs."""
    moment = second(now)
    _require_root(conn, root)
    current = current_ca(conn, operator)
    if current is None or current.revoked_at is not None:
        raise StateError(
            f"operator {operator} has no unrevoked CA to rotate", reason="NO_OPERATOR_CA"
        )
    previous = x509.load_der_x509_certificate(current.certificate)
    ca = pki_authority.rotate_operator_ca(root, previous, now=moment, base_url=base_url)
    conn.execute(update(authz_cas).where(authz_cas.c.id == current.id).values(status=CA_RETIRED))
    record = _insert_ca(
        conn,
        operator,
        generation=current.generation + 1,
        ca=ca,
        encrypted_key=encrypt_private_key(ca.private_key, passphrase),
        now=moment,
    )
    # The operator's CRL is signed by the current key from now on (RFC 5280 5.2.1 changeover).
    sign_crl(conn, operator, ca, now=moment)
    fingerprint = hashlib.sha256(current.certificate).digest()
    append_entry(conn, OperatorCaRotated(moment, operator, fingerprint, record.certificate))
    return record


def revoke_operator_ca(
    conn: Connection,
    root: CertificateAuthority,
    operator: str,
    *,
    reason_code: int = 9,
    now: dt.datetime | None = None,
) -> list[CaRecord]:
    """Revoke every generation of ``operator``'s CA on the root CRL (default privilegeWithdrawn)."""
    moment = second(now)
    reason_from_code(reason_code)
    _require_root(conn, root)
    generations = [ca for ca in ca_generations(conn, operator) if ca.revoked_at is None]
    if not generations:
        raise StateError(
            f"operator {operator} has no unrevoked CA", reason="OPERATOR_CA_ALREADY_REVOKED"
        )
    conn.execute(
        update(authz_cas)
        .where(authz_cas.c.issuer == operator, authz_cas.c.revoked_at.is_(None))
        .values(revoked_at=moment, revocation_reason=reason_code)
    )
    sign_crl(conn, ROOT_ISSUER, root, now=moment)
    for ca in generations:
        append_entry(conn, OperatorCaRevoked(moment, operator, ca.certificate, reason_code))
    return ca_generations(conn, operator)


def _revocations(conn: Connection, issuer: str, now: dt.datetime) -> list[Revocation]:
    if issuer == ROOT_ISSUER:
        c = authz_cas.c
        query = select(c.serial_hex, c.revoked_at, c.revocation_reason).where(
            c.issuer != ROOT_ISSUER, c.revoked_at.is_not(None)
        )
    else:
        t = authz_authorizations.c
        query = select(t.serial_hex, t.revoked_at, t.revocation_reason).where(
            t.operator == issuer,
            t.status == AUTH_REVOKED,
            t.not_after > now - EXPIRED_ENTRY_GRACE,
        )
    return [
        Revocation(int(row[0], 16), utc(row[1]), reason_from_code(int(row[2] or 0)))
        for row in conn.execute(query)
    ]


def sign_crl(
    conn: Connection, issuer: str, signer: CertificateAuthority, *, now: dt.datetime | None = None
) -> x509.CertificateRevocationList:
    """Re-sign ``issuer``'s CRL from the database and store it with the next CRL number.

    The number is advanced by compare-and-set, so two processes re-signing at once cannot both
    publish the same number: the loser's transaction sees zero rows changed and raises
    :class:`ConcurrentUpdateError` (its caller retries with fresh reads).
    """
    moment = second(now)
    lifetime = ROOT_CRL_LIFETIME if issuer == ROOT_ISSUER else OPERATOR_CRL_LIFETIME
    previous = conn.execute(
        select(authz_crls.c.crl_number).where(authz_crls.c.issuer == issuer)
    ).scalar_one_or_none()
    number = 1 if previous is None else int(previous) + 1
    crl = build_crl(
        signer,
        _revocations(conn, issuer, moment),
        crl_number=number,
        this_update=moment,
        next_update=moment + lifetime,
    )
    values = {
        "crl_number": number,
        "this_update": moment,
        "next_update": moment + lifetime,
        "der": crl.public_bytes(_DER),
    }
    if previous is None:
        conn.execute(insert(authz_crls).values(issuer=issuer, **values))
    else:
        changed = conn.execute(
            update(authz_crls)
            .where(and_(authz_crls.c.issuer == issuer, authz_crls.c.crl_number == previous))
            .values(**values)
        ).rowcount
        if changed != 1:
            raise ConcurrentUpdateError("a concurrent CRL update won; retry")
    bump_generation(conn)
    return crl


@dataclass(frozen=True, slots=True)
class StoredCrl:
    """A CRL as stored: issuer, number, validity window and DER."""

    issuer: str
    crl_number: int
    this_update: dt.datetime
    next_update: dt.datetime
    der: bytes


def stored_crls(conn: Connection, issuer: str | None = None) -> list[StoredCrl]:
    """The latest CRL of every issuer (or of one)."""
    query = select(authz_crls)
    if issuer is not None:
        query = query.where(authz_crls.c.issuer == issuer)
    return [
        StoredCrl(
            issuer=str(row.issuer),
            crl_number=int(row.crl_number),
            this_update=utc(row.this_update),
            next_update=utc(row.next_update),
            der=bytes(row.der),
        )
        for row in conn.execute(query)
    ]


def stale_crl_issuers(conn: Connection, now: dt.datetime | None = None) -> list[str]:
    """Issuers whose CRL is older than :data:`CRL_REFRESH_AFTER` at ``now``."""
    moment = second(now)
    rows = conn.execute(
        select(authz_crls.c.issuer).where(authz_crls.c.this_update <= moment - CRL_REFRESH_AFTER)
    )
    return [str(row[0]) for row in rows]


def crl_signer(conn: Connection, issuer: str, keys: OperatorKeys) -> CertificateAuthority:
    """The key that signs an operator's CRL: its current generation (the last one if revoked)."""
    generations = ca_generations(conn, issuer)
    if not generations:
        raise NotFoundError(f"operator {issuer} has no CA", reason="NO_OPERATOR_CA")
    current = [ca for ca in generations if ca.status == CA_CURRENT] or generations[-1:]
    return keys.authority(conn, current[0].id)


def refresh_crls(
    conn: Connection,
    keys: OperatorKeys,
    *,
    root: CertificateAuthority | None = None,
    now: dt.datetime | None = None,
) -> list[str]:
    """Re-sign every CRL past :data:`CRL_REFRESH_AFTER`; the root's only when ``root`` is given.

    Returns the issuers re-signed.
    """
    moment = second(now)
    done = []
    for issuer in stale_crl_issuers(conn, moment):
        if issuer == ROOT_ISSUER:
            if root is None:
                continue
            sign_crl(conn, issuer, root, now=moment)
        else:
            sign_crl(conn, issuer, crl_signer(conn, issuer, keys), now=moment)
        done.append(issuer)
    return done


def operator_authorities(
    conn: Connection, operator: str, keys: OperatorKeys
) -> list[CertificateAuthority]:
    """Every generation of ``operator``'s CA with keys opened (for its OCSP responder)."""
    return [keys.authority(conn, ca.id) for ca in ca_generations(conn, operator)]


@dataclass(frozen=True, slots=True)
class BundleSnapshot:
    """The trust bundle as of a generation, when its first CRL expires and its last was signed.

    Every revocation a CRL lists is dated at or before that CRL's thisUpdate, so from
    ``latest_this_update`` on each one in the bundle is in force.
    """

    generation: int
    bundle: TrustBundle
    earliest_next_update: dt.datetime
    latest_this_update: dt.datetime


def load_bundle(conn: Connection) -> BundleSnapshot:
    """Read root, operator CAs and current CRLs into a :class:`TrustBundle`."""
    generation = current_generation(conn)
    cas = all_cas(conn)
    roots = [ca for ca in cas if ca.issuer == ROOT_ISSUER]
    if not roots:
        raise StateError("no regulator root is installed", reason="NO_ROOT")
    crls = stored_crls(conn)
    bundle = TrustBundle(
        root=x509.load_der_x509_certificate(roots[-1].certificate),
        operator_cas=tuple(
            x509.load_der_x509_certificate(ca.certificate) for ca in cas if ca.issuer != ROOT_ISSUER
        ),
        crls=tuple(x509.load_der_x509_crl(crl.der) for crl in crls),
    )
    never = dt.datetime.max.replace(tzinfo=dt.UTC)
    earliest = min((crl.next_update for crl in crls), default=never)
    latest = max((crl.this_update for crl in crls), default=never)
    return BundleSnapshot(generation, bundle, earliest, latest)


def ca_certificates(conn: Connection, issuer: str) -> Sequence[bytes]:
    """DER certificates of every generation of ``issuer``, oldest first."""
    return [ca.certificate for ca in ca_generations(conn, issuer)]


def count_cas(conn: Connection) -> int:
    """Number of CA generations recorded (root included)."""
    return int(conn.execute(select(func.count()).select_from(authz_cas)).scalar_one())
