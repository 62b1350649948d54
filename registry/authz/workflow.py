"""The store authorization workflow, as functions over a SQLAlchemy connection.

::

    submit_application ─▶ review_application ─▶ issue_authorization ─▶ renew_authorization
          (CSR checked)      (approve / deny,        (certificate,            (new certificate,
                              reason, assessment)     log entry)               new serial)
                                                            └──────────▶ revoke_authorization
                                                                         (RFC 5280 reason,
                                                                          CRL re-signed)

Every function runs inside the caller's transaction and takes the acting operator, refusing
with :class:`ForbiddenError` to touch another operator's records. Issuance, renewal and
revocation append their transparency-log entry in that same transaction, so a certificate and
its entry commit together or not at all. Each of them also moves ``authz_state.generation``
(issuance and an expired certificate's renewal directly, the others by re-signing a CRL), so a
process caching what VerifySeller answers can tell with one cheap read that it is stale.

Renewal issues a new certificate with a new serial for the same store and scope. It reuses the
store's key by re-reading the CSR of the original application (the store proved possession of
that key when it applied), or takes a new CSR when the store changes keys. The previous
certificate is revoked as ``superseded`` (RFC 5280 reason 4) unless it already expired, so one
certificate per store and operator is valid at a time.

A store key (by its SubjectPublicKeyInfo digest) once revoked for key compromise is never
certified again, and a key bound to another live authorization is refused: at submission
(``InvalidRequestError`` on the CSR) and again at issuance and renewal (``StateError``), since
the registry may have changed in between.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import Connection, Row, and_, insert, select, update

from registry.authz.authorities import (
    OperatorKeys,
    bump_generation,
    crl_signer,
    current_ca,
    second,
    sign_crl,
    utc,
)
from registry.authz.errors import (
    ForbiddenError,
    InvalidRequestError,
    NotFoundError,
    StateError,
)
from registry.authz.records import (
    ApplicationRecord,
    ApplicationRequest,
    AuthorizationRecord,
    Contact,
    Qualifications,
    decode_scope,
    encode_card_types,
    encode_provinces,
    scope_problem,
    serial_hex,
)
from registry.authz.sealing import Sealer
from registry.authz.tables import (
    APP_APPROVED,
    APP_DENIED,
    APP_ISSUED,
    APP_SUBMITTED,
    AUTH_ACTIVE,
    AUTH_REVOKED,
    authz_applications,
    authz_authorizations,
)
from registry.log.entries import Issuance, Renewal, Revocation, StoreRef
from registry.log.storage import append_entries, append_entry
from registry.pki.authorization import StoreAuthorization
from registry.pki.errors import (
    CsrError,
    CsrSignatureError,
    InvalidAuthorizationError,
    InvalidCreditCodeError,
    InvalidOperatorError,
    IssuanceError,
    UnsupportedKeyError,
)
from registry.pki.identifiers import spki_sha256
from registry.pki.issuance import STORE_VALIDITY, check_csr, issue_store_certificate, load_csr
from registry.pki.keys import require_p256_public_key
from registry.pki.operators import validate_operator_id
from registry.pki.revocation import COMPROMISE_REASONS, reason_code
from registry.pki.scope import Scope
from registry.pki.uscc import validate_credit_code

MAX_VALIDITY: Final = dt.timedelta(days=3 * 365)
"""Longest store authorization an operator may issue."""

STORE_REVOCATION_CODES: Final = frozenset({0, 1, 3, 4, 5, 9})
"""RFC 5280 reasons that fit a store certificate: unspecified, keyCompromise,
affiliationChanged, superseded, cessationOfOperation, privilegeWithdrawn. certificateHold is
refused (revocations here are final) and the CA/AA compromise reasons are for CAs."""

COMPROMISE_CODES: Final = frozenset(reason_code(reason) for reason in COMPROMISE_REASONS)
"""RFC 5280 reason codes that say the key itself is compromised: it is never certified again."""

MAX_TEXT: Final = 2000
"""Longest review reason, assessment or revocation comment, in characters."""

MAX_CSR_BYTES: Final = 8192
"""Largest CSR accepted (a P-256 CSR is a few hundred bytes)."""

_LICENCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")
_PHONE = re.compile(r"\+?[0-9][0-9 -]{4,19}")
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]{1,190}\.[A-Za-z]{2,24}")
_DER = serialization.Encoding.DER

# A valid authorization whose single field is replaced to learn whether that field alone is
# acceptable: the PKI's own rules stay the only definition of a valid field.
_PROBE: Final = {
    "operator": "cmcc",
    "marketplace": "probe",
    "shop_id": "probe",
    "legal_name": "probe",
    "credit_code": "91350100M000100Y43",
    "scope": Scope.of(["personal"], "all"),
}


def _field_problem(name: str, value: object) -> str | None:
    try:
        StoreAuthorization(**{**_PROBE, name: value})  # type: ignore[arg-type]
    except (InvalidAuthorizationError, InvalidCreditCodeError, InvalidOperatorError) as exc:
        return str(exc)
    return None


def _text_problem(value: str | None, *, limit: int = MAX_TEXT) -> str | None:
    if value is None or not value.strip():
        return "is required"
    if len(value) > limit:
        return f"must be at most {limit} characters"
    return None


def _validate(
    request: ApplicationRequest, *, operator_known: bool
) -> tuple[StoreAuthorization, x509.CertificateSigningRequest]:
    problems: list[tuple[str, str]] = []
    reason: str | None = None
    for name in ("operator", "marketplace", "shop_id", "legal_name", "credit_code"):
        problem = _field_problem(name, getattr(request, name))
        if problem is not None:
            problems.append((f"store.{name}" if name != "operator" else name, problem))
        elif name == "operator" and not operator_known:
            # Well-formed but with no CA here: nobody could ever review the application.
            problems.append(("operator", f"the registry knows no operator {request.operator!r}"))
            reason = "UNKNOWN_OPERATOR"
    problem = scope_problem(list(request.card_types), list(request.provinces), request.nationwide)
    if problem is not None:
        problems.append(("scope", problem))
    q = request.qualifications
    if not _LICENCE.fullmatch(q.business_licence):
        problems.append(
            ("qualifications.business_licence_number", "must be 1-64 of A-Z, a-z, 0-9 and '-'")
        )
    if (q.protection_certification is None) == (q.protection_level is None):
        problems.append(
            (
                "qualifications.information_protection",
                "give a certification or an assessment level",
            )
        )
    elif q.protection_level is not None and not 1 <= q.protection_level <= 5:
        problems.append(
            ("qualifications.protection_assessment_level", "graded protection levels are 1-5")
        )
    elif q.protection_certification is not None:
        problem = _text_problem(q.protection_certification, limit=200)
        if problem is not None:
            problems.append(("qualifications.protection_certification", problem))
    if _text_problem(q.contact.name, limit=64) is not None:
        problems.append(("qualifications.contact.name", "is required (at most 64 characters)"))
    if not _PHONE.fullmatch(q.contact.phone):
        problems.append(("qualifications.contact.phone", "must be 5-20 digits, spaces or '-'"))
    if q.contact.email and not _EMAIL.fullmatch(q.contact.email):
        problems.append(("qualifications.contact.email", "is not an e-mail address"))
    csr: x509.CertificateSigningRequest | None = None
    if not request.csr or len(request.csr) > MAX_CSR_BYTES:
        problems.append(("csr", f"a PKCS#10 request of at most {MAX_CSR_BYTES} bytes is required"))
    else:
        try:
            csr = load_csr(request.csr)
            check_csr(csr)
        except CsrSignatureError as exc:
            problems.append(("csr", str(exc)))
            reason = "CSR_SIGNATURE_INVALID"
        except (CsrError, UnsupportedKeyError) as exc:
            problems.append(("csr", str(exc)))
            reason = "CSR_INVALID"
    if problems:
        raise InvalidRequestError(problems, reason=reason)
    assert csr is not None
    authorization = StoreAuthorization(
        operator=request.operator,
        marketplace=request.marketplace,
        shop_id=request.shop_id,
        legal_name=request.legal_name,
        credit_code=validate_credit_code(request.credit_code),
        scope=Scope.of(request.card_types, "all" if request.nationwide else request.provinces),
    )
    return authorization, csr


def _contact_context(operator: str, marketplace: str, shop_id: str) -> bytes:
    return f"application-contact:v1:{operator}:{marketplace}:{shop_id}".encode()


def _encode_contact(contact: Contact) -> bytes:
    return "\x1f".join((contact.name, contact.phone, contact.email)).encode("utf-8")


def _decode_contact(data: bytes) -> Contact:
    name, phone, email = data.decode("utf-8").split("\x1f")
    return Contact(name, phone, email)


def submit_application(
    conn: Connection,
    request: ApplicationRequest,
    *,
    submitted_by: str,
    sealer: Sealer,
    now: dt.datetime | None = None,
) -> ApplicationRecord:
    """Validate and store an application (the CSR's signature proves the store holds its key)."""
    moment = second(now)
    authorization, csr = _validate(
        request, operator_known=current_ca(conn, request.operator) is not None
    )
    refusal = _key_refusal(conn, spki_sha256(check_csr(csr)), moment)
    if refusal is not None:
        reason, problem = refusal
        raise InvalidRequestError([("csr", problem)], reason=reason)
    q = request.qualifications
    key_id, sealed = sealer.seal(
        _encode_contact(q.contact),
        _contact_context(request.operator, request.marketplace, request.shop_id),
    )
    app_id = conn.execute(
        insert(authz_applications)
        .values(
            operator=authorization.operator,
            marketplace=authorization.marketplace,
            shop_id=authorization.shop_id,
            legal_name=authorization.legal_name,
            credit_code=authorization.credit_code,
            card_types=encode_card_types(authorization.scope),
            provinces=encode_provinces(authorization.scope),
            csr=csr.public_bytes(_DER),
            business_licence=q.business_licence,
            protection_certification=q.protection_certification,
            protection_level=q.protection_level,
            contact_key_id=key_id,
            contact_sealed=sealed,
            status=APP_SUBMITTED,
            submitted_by=submitted_by,
            submitted_at=moment,
        )
        .returning(authz_applications.c.id)
    ).scalar_one()
    return get_application(conn, int(app_id), sealer=sealer)


def _application(row: Row[Any], sealer: Sealer | None) -> ApplicationRecord:
    m = row._mapping
    contact = Contact("", "", "")
    if sealer is not None:
        contact = _decode_contact(
            sealer.open(
                m["contact_key_id"],
                bytes(m["contact_sealed"]),
                _contact_context(m["operator"], m["marketplace"], m["shop_id"]),
            )
        )
    reviewed_at = m["reviewed_at"]
    return ApplicationRecord(
        id=int(m["id"]),
        operator=m["operator"],
        marketplace=m["marketplace"],
        shop_id=m["shop_id"],
        legal_name=m["legal_name"],
        credit_code=m["credit_code"],
        scope=decode_scope(m["card_types"], m["provinces"]),
        qualifications=Qualifications(
            business_licence=m["business_licence"],
            protection_certification=m["protection_certification"],
            protection_level=m["protection_level"],
            contact=contact,
        ),
        status=m["status"],
        submitted_by=m["submitted_by"],
        submitted_at=utc(m["submitted_at"]),
        decision_reason=m["decision_reason"],
        assessment=m["assessment"],
        reviewed_by=m["reviewed_by"],
        reviewed_at=utc(reviewed_at) if reviewed_at is not None else None,
        serial_hex=m["serial_hex"],
    )


def get_application(
    conn: Connection, application_id: int, *, sealer: Sealer | None = None, lock: bool = False
) -> ApplicationRecord:
    """One application; ``sealer`` opens the contact (left empty without it)."""
    query = select(authz_applications).where(authz_applications.c.id == application_id)
    if lock:
        query = query.with_for_update()
    row = conn.execute(query).one_or_none()
    if row is None:
        raise NotFoundError(f"no application {application_id}", reason="APPLICATION_NOT_FOUND")
    return _application(row, sealer)


def list_applications(
    conn: Connection,
    operator: str,
    *,
    status: str | None = None,
    after_id: int = 0,
    limit: int = 100,
    sealer: Sealer | None = None,
) -> list[ApplicationRecord]:
    """An operator's applications in id order, optionally of one status, after ``after_id``."""
    t = authz_applications.c
    query = select(authz_applications).where(t.operator == operator, t.id > after_id)
    if status is not None:
        query = query.where(t.status == status)
    rows = conn.execute(query.order_by(t.id).limit(limit))
    return [_application(row, sealer) for row in rows]


def _own(record_operator: str, operator: str, what: str) -> None:
    if record_operator != operator:
        raise ForbiddenError(f"{what} belongs to operator {record_operator}, not {operator}")


def review_application(
    conn: Connection,
    application_id: int,
    *,
    operator: str,
    approve: bool,
    reason: str,
    assessment: str,
    reviewer: str,
    now: dt.datetime | None = None,
) -> ApplicationRecord:
    """Approve or deny a submitted application, recording the reason and the assessment."""
    moment = second(now)
    checks = (("reason", _text_problem(reason)), ("assessment", _text_problem(assessment)))
    problems = [(name, problem) for name, problem in checks if problem is not None]
    if problems:
        raise InvalidRequestError(problems)
    record = get_application(conn, application_id, lock=True)
    _own(record.operator, operator, f"application {application_id}")
    if record.status != APP_SUBMITTED:
        raise StateError(
            f"application {application_id} is {record.status}, not waiting for review",
            reason="APPLICATION_NOT_PENDING",
        )
    conn.execute(
        update(authz_applications)
        .where(authz_applications.c.id == application_id)
        .values(
            status=APP_APPROVED if approve else APP_DENIED,
            decision_reason=reason.strip(),
            assessment=assessment.strip(),
            reviewed_by=reviewer,
            reviewed_at=moment,
        )
    )
    return get_application(conn, application_id)


def _authorization(row: Row[Any]) -> AuthorizationRecord:
    m = row._mapping
    revoked_at = m["revoked_at"]
    return AuthorizationRecord(
        serial_hex=m["serial_hex"],
        operator=m["operator"],
        ca_id=int(m["ca_id"]),
        application_id=m["application_id"],
        marketplace=m["marketplace"],
        shop_id=m["shop_id"],
        legal_name=m["legal_name"],
        credit_code=m["credit_code"],
        scope=decode_scope(m["card_types"], m["provinces"]),
        not_before=utc(m["not_before"]),
        not_after=utc(m["not_after"]),
        issued_at=utc(m["issued_at"]),
        certificate=bytes(m["certificate"]),
        status=m["status"],
        is_current=bool(m["is_current"]),
        revoked_at=utc(revoked_at) if revoked_at is not None else None,
        revocation_reason=m["revocation_reason"],
        revocation_comment=m["revocation_comment"],
        renewed_from=m["renewed_from"],
        superseded_by=m["superseded_by"],
    )


def get_authorization(conn: Connection, serial: str, *, lock: bool = False) -> AuthorizationRecord:
    """One authorization by canonical serial hex."""
    query = select(authz_authorizations).where(authz_authorizations.c.serial_hex == serial)
    if lock:
        query = query.with_for_update()
    row = conn.execute(query).one_or_none()
    if row is None:
        raise NotFoundError(f"no store authorization {serial}", reason="AUTHORIZATION_NOT_FOUND")
    return _authorization(row)


def list_authorizations(
    conn: Connection,
    *,
    operator: str | None = None,
    marketplace: str | None = None,
    shop_id: str | None = None,
    current_only: bool = False,
    after_serial: str = "",
    limit: int = 100,
) -> list[AuthorizationRecord]:
    """Authorizations matching the filters, in serial order after ``after_serial``."""
    t = authz_authorizations.c
    query = select(authz_authorizations).where(t.serial_hex > after_serial)
    if operator is not None:
        query = query.where(t.operator == operator)
    if marketplace is not None:
        query = query.where(t.marketplace == marketplace)
    if shop_id is not None:
        query = query.where(t.shop_id == shop_id)
    if current_only:
        query = query.where(t.is_current.is_(True))
    return [_authorization(row) for row in conn.execute(query.order_by(t.serial_hex).limit(limit))]


def search_authorizations(
    conn: Connection,
    *,
    legal_name: str | None = None,
    credit_code: str | None = None,
    after_serial: str = "",
    limit: int = 100,
) -> list[AuthorizationRecord]:
    """Authorizations of stores whose name starts with ``legal_name`` or with this credit code.

    Names match by prefix (``LIKE 'name%'``, wildcards escaped; SQLite folds ASCII case);
    results are in serial order after ``after_serial``.
    """
    t = authz_authorizations.c
    query = select(authz_authorizations).where(t.serial_hex > after_serial)
    if credit_code is not None:
        query = query.where(t.credit_code == credit_code)
    if legal_name is not None:
        escaped = legal_name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(t.legal_name.like(f"{escaped}%", escape="\\"))
    return [_authorization(row) for row in conn.execute(query.order_by(t.serial_hex).limit(limit))]


def _check_validity(validity: dt.timedelta) -> None:
    if not dt.timedelta(days=1) <= validity <= MAX_VALIDITY:
        raise InvalidRequestError(
            [("validity_days", f"must be 1-{MAX_VALIDITY.days} days")], reason="BAD_VALIDITY"
        )


def _store_ref(record: StoreAuthorization | AuthorizationRecord) -> StoreRef:
    return StoreRef(record.operator, record.marketplace, record.shop_id, record.credit_code)


def _key_refusal(
    conn: Connection, digest: bytes, now: dt.datetime, *, renewing: str | None = None
) -> tuple[str, str] | None:
    """Why the store key with SPKI digest ``digest`` may not be certified: (reason, problem).

    A key revoked for compromise is refused for good; a key bound to another live (unrevoked,
    unexpired) authorization is refused while that lasts. ``renewing`` is the authorization a
    renewal replaces, which may hand its own key on.
    """
    t = authz_authorizations.c
    rows = conn.execute(
        select(t.serial_hex, t.status, t.not_after, t.revocation_reason)
        .where(t.spki_sha256 == digest)
        .order_by(t.serial_hex)
    ).all()
    for row in rows:
        if row.revocation_reason in COMPROMISE_CODES:
            return (
                "KEY_COMPROMISED",
                f"this key was revoked for key compromise (authorization {row.serial_hex}); "
                "the store must generate a new key",
            )
    for row in rows:
        if row.serial_hex != renewing and row.status == AUTH_ACTIVE and utc(row.not_after) > now:
            return (
                "KEY_IN_USE",
                f"this key is bound to live authorization {row.serial_hex}; "
                "each authorization needs its own key",
            )
    return None


def _issue(
    conn: Connection,
    keys: OperatorKeys,
    operator: str,
    csr: bytes,
    authorization: StoreAuthorization,
    *,
    base_url: str,
    now: dt.datetime,
    validity: dt.timedelta,
    renewing: str | None = None,
) -> tuple[int, x509.Certificate]:
    try:
        request = load_csr(csr)
        public_key = check_csr(request)
    except (CsrError, UnsupportedKeyError) as exc:
        raise InvalidRequestError([("csr", str(exc))], reason="CSR_INVALID") from exc
    refusal = _key_refusal(conn, spki_sha256(public_key), now, renewing=renewing)
    if refusal is not None:
        reason, problem = refusal
        raise StateError(problem, reason=reason)
    ca = current_ca(conn, operator)
    if ca is None:
        raise StateError(f"operator {operator} has no CA", reason="NO_OPERATOR_CA")
    if ca.revoked_at is not None:
        raise StateError(
            f"the CA of operator {operator} was revoked by the regulator",
            reason="OPERATOR_CA_REVOKED",
        )
    authority = keys.authority(conn, ca.id)
    try:
        certificate = issue_store_certificate(
            authority, request, authorization, base_url=base_url, now=now, validity=validity
        )
    except (CsrError, UnsupportedKeyError) as exc:
        raise InvalidRequestError([("csr", str(exc))], reason="CSR_INVALID") from exc
    except IssuanceError as exc:
        raise StateError(str(exc), reason="CANNOT_ISSUE") from exc
    return ca.id, certificate


def _insert_authorization(
    conn: Connection,
    certificate: x509.Certificate,
    authorization: StoreAuthorization,
    *,
    ca_id: int,
    application_id: int | None,
    now: dt.datetime,
    renewed_from: str | None = None,
) -> str:
    serial = serial_hex(certificate.serial_number)
    conn.execute(
        insert(authz_authorizations).values(
            serial_hex=serial,
            operator=authorization.operator,
            ca_id=ca_id,
            application_id=application_id,
            marketplace=authorization.marketplace,
            shop_id=authorization.shop_id,
            legal_name=authorization.legal_name,
            credit_code=authorization.credit_code,
            card_types=encode_card_types(authorization.scope),
            provinces=encode_provinces(authorization.scope),
            not_before=certificate.not_valid_before_utc,
            not_after=certificate.not_valid_after_utc,
            issued_at=now,
            certificate=certificate.public_bytes(_DER),
            status=AUTH_ACTIVE,
            is_current=True,
            renewed_from=renewed_from,
            spki_sha256=spki_sha256(require_p256_public_key(certificate.public_key())),
        )
    )
    return serial


def _current_for_shop(
    conn: Connection, operator: str, marketplace: str, shop_id: str
) -> AuthorizationRecord | None:
    t = authz_authorizations.c
    row = conn.execute(
        select(authz_authorizations).where(
            and_(
                t.marketplace == marketplace,
                t.shop_id == shop_id,
                t.operator == operator,
                t.is_current.is_(True),
            )
        )
    ).one_or_none()
    return None if row is None else _authorization(row)


def issue_authorization(
    conn: Connection,
    application_id: int,
    *,
    operator: str,
    keys: OperatorKeys,
    base_url: str,
    validity: dt.timedelta = STORE_VALIDITY,
    now: dt.datetime | None = None,
) -> AuthorizationRecord:
    """Issue the certificate of an approved application under the operator's current CA.

    Refused while the store holds a valid authorization from this operator (renew that instead);
    a revoked or expired one is replaced as the store's current authorization.
    """
    moment = second(now)
    _check_validity(validity)
    application = get_application(conn, application_id, lock=True)
    _own(application.operator, operator, f"application {application_id}")
    if application.status == APP_ISSUED:
        raise StateError(
            f"application {application_id} was already issued as {application.serial_hex}",
            reason="APPLICATION_ALREADY_ISSUED",
        )
    if application.status != APP_APPROVED:
        raise StateError(
            f"application {application_id} is {application.status}, not approved",
            reason="APPLICATION_NOT_APPROVED",
        )
    existing = _current_for_shop(conn, operator, application.marketplace, application.shop_id)
    if existing is not None:
        if existing.status == AUTH_ACTIVE and not existing.expired(moment):
            raise StateError(
                f"the store already holds authorization {existing.serial_hex} from {operator}; "
                "renew or revoke it",
                reason="ALREADY_AUTHORIZED",
            )
        _retire(conn, existing.serial_hex)
    authorization = StoreAuthorization(
        operator=application.operator,
        marketplace=application.marketplace,
        shop_id=application.shop_id,
        legal_name=application.legal_name,
        credit_code=application.credit_code,
        scope=application.scope,
    )
    csr = conn.execute(
        select(authz_applications.c.csr).where(authz_applications.c.id == application_id)
    ).scalar_one()
    ca_id, certificate = _issue(
        conn, keys, operator, bytes(csr), authorization, base_url=base_url, now=moment,
        validity=validity,
    )  # fmt: skip
    serial = _insert_authorization(
        conn, certificate, authorization, ca_id=ca_id, application_id=application_id, now=moment
    )
    conn.execute(
        update(authz_applications)
        .where(authz_applications.c.id == application_id)
        .values(status=APP_ISSUED, serial_hex=serial)
    )
    der = certificate.public_bytes(_DER)
    append_entry(conn, Issuance(moment, _store_ref(authorization), certificate.serial_number, der))
    # A new current authorization changes what VerifySeller answers for the shop: processes
    # caching shop -> certificates (services.features.seller_checks) watch the generation.
    bump_generation(conn)
    return get_authorization(conn, serial)


def _retire(conn: Connection, serial: str, superseded_by: str | None = None) -> None:
    conn.execute(
        update(authz_authorizations)
        .where(authz_authorizations.c.serial_hex == serial)
        .values(is_current=False, superseded_by=superseded_by)
    )


def _authorization_fields(record: AuthorizationRecord) -> StoreAuthorization:
    return StoreAuthorization(
        operator=record.operator,
        marketplace=record.marketplace,
        shop_id=record.shop_id,
        legal_name=record.legal_name,
        credit_code=record.credit_code,
        scope=record.scope,
    )


def renew_authorization(
    conn: Connection,
    serial: str,
    *,
    operator: str,
    keys: OperatorKeys,
    base_url: str,
    csr: bytes | None = None,
    validity: dt.timedelta = STORE_VALIDITY,
    now: dt.datetime | None = None,
) -> AuthorizationRecord:
    """Issue a new certificate (new serial) replacing the store's current one (see module doc)."""
    moment = second(now)
    _check_validity(validity)
    previous = get_authorization(conn, serial, lock=True)
    _own(previous.operator, operator, f"authorization {serial}")
    if previous.status == AUTH_REVOKED:
        raise StateError(f"authorization {serial} is revoked", reason="AUTHORIZATION_REVOKED")
    if not previous.is_current:
        raise StateError(
            f"authorization {serial} was already renewed as {previous.superseded_by}",
            reason="AUTHORIZATION_SUPERSEDED",
        )
    request = csr
    if request is None:
        if previous.application_id is None:
            raise InvalidRequestError(
                [("csr", "this authorization has no stored application CSR; send a new CSR")],
                reason="CSR_REQUIRED",
            )
        request = bytes(
            conn.execute(
                select(authz_applications.c.csr).where(
                    authz_applications.c.id == previous.application_id
                )
            ).scalar_one()
        )
    elif len(request) > MAX_CSR_BYTES:
        raise InvalidRequestError([("csr", "CSR too large")], reason="CSR_INVALID")
    else:
        try:
            check_csr(load_csr(request))
        except CsrSignatureError as exc:
            raise InvalidRequestError([("csr", str(exc))], reason="CSR_SIGNATURE_INVALID") from exc
        except (CsrError, UnsupportedKeyError) as exc:
            raise InvalidRequestError([("csr", str(exc))], reason="CSR_INVALID") from exc
    fields = _authorization_fields(previous)
    ca_id, certificate = _issue(
        conn, keys, operator, request, fields, base_url=base_url, now=moment, validity=validity,
        renewing=serial,
    )  # fmt: skip
    new_serial = serial_hex(certificate.serial_number)
    _retire(conn, serial, superseded_by=new_serial)
    _insert_authorization(
        conn, certificate, fields, ca_id=ca_id, application_id=previous.application_id,
        now=moment, renewed_from=serial,
    )  # fmt: skip
    store = _store_ref(previous)
    entries: list[Renewal | Revocation] = [
        Renewal(
            moment,
            store,
            certificate.serial_number,
            int(serial, 16),
            certificate.public_bytes(_DER),
        )
    ]
    if not previous.expired(moment):
        _mark_revoked(conn, serial, reason_code=4, comment=f"renewed as {new_serial}", now=moment)
        entries.append(Revocation(moment, store, int(serial, 16), 4))
        sign_crl(conn, operator, crl_signer(conn, operator, keys), now=moment)
    else:
        # No CRL to re-sign, but the shop's current certificate changed (see issue_authorization).
        bump_generation(conn)
    append_entries(conn, entries)
    return get_authorization(conn, new_serial)


def _mark_revoked(
    conn: Connection, serial: str, *, reason_code: int, comment: str | None, now: dt.datetime
) -> None:
    conn.execute(
        update(authz_authorizations)
        .where(authz_authorizations.c.serial_hex == serial)
        .values(
            status=AUTH_REVOKED,
            revoked_at=now,
            revocation_reason=reason_code,
            revocation_comment=comment,
        )
    )


def revoke_authorization(
    conn: Connection,
    serial: str,
    *,
    operator: str,
    reason_code: int,
    keys: OperatorKeys,
    comment: str | None = None,
    now: dt.datetime | None = None,
) -> AuthorizationRecord:
    """Revoke a store authorization with an RFC 5280 reason and re-sign the operator's CRL."""
    moment = second(now)
    if reason_code not in STORE_REVOCATION_CODES:
        raise InvalidRequestError(
            [("reason", f"RFC 5280 reason {reason_code} does not apply to a store certificate")],
            reason="BAD_REVOCATION_REASON",
        )
    if comment is not None and len(comment) > MAX_TEXT:
        raise InvalidRequestError([("comment", f"must be at most {MAX_TEXT} characters")])
    record = get_authorization(conn, serial, lock=True)
    _own(record.operator, operator, f"authorization {serial}")
    if record.status == AUTH_REVOKED:
        raise StateError(f"authorization {serial} is already revoked", reason="ALREADY_REVOKED")
    _mark_revoked(conn, serial, reason_code=reason_code, comment=comment, now=moment)
    sign_crl(conn, operator, crl_signer(conn, operator, keys), now=moment)
    append_entry(conn, Revocation(moment, _store_ref(record), int(serial, 16), reason_code))
    return get_authorization(conn, serial)


def current_authorizations(
    conn: Connection, marketplace: str, shop_ids: Sequence[str], operator: str | None = None
) -> list[AuthorizationRecord]:
    """The current authorizations of some shops of a marketplace (any operator, or one)."""
    t = authz_authorizations.c
    query = select(authz_authorizations).where(
        t.marketplace == marketplace, t.shop_id.in_(list(shop_ids)), t.is_current.is_(True)
    )
    if operator is not None:
        validate_operator_id(operator)
        query = query.where(t.operator == operator)
    return [_authorization(row) for row in conn.execute(query)]
