"""Seller authorizations as the service runs them: applications and the authorization lifecycle.

``registry.authz`` holds the workflow and the storage; this module decides who may do what (the
caller is the mTLS principal) and maps the library's errors to domain errors. The hot-path checks
of a seller (verification, the trust cache, CRLs and OCSP) are in
:mod:`services.features.seller_checks`.

Who may call what: a marketplace submits applications for shops on its own marketplace (the store
applies through the marketplace it sells on, which vouches that the shop is one of its own; stores
have no identity of their own in this system), an operator's desk submits applications addressed
to itself; only the operator an application or authorization belongs to reviews, issues, renews
and revokes it. Authorizations are public: any authenticated party may read and verify them.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Final, Self, TypeVar

from sqlalchemy import Connection

from registry.authz import authorities, workflow
from registry.authz.errors import (
    ConcurrentUpdateError,
    ForbiddenError,
    InvalidRequestError,
    KeysUnavailableError,
    NotFoundError,
    RegistryError,
    StateError,
)
from registry.authz.keyfiles import KeyDirectory
from registry.authz.records import (
    ApplicationRecord,
    ApplicationRequest,
    AuthorizationRecord,
    parse_serial,
    serial_hex,
)
from registry.authz.sealing import Sealer
from registry.clock import Clock, utc_now
from registry.pki.errors import (
    InvalidOperatorError,
)
from registry.pki.operators import validate_operator_id
from registry.pki.regions import PROVINCES
from services.domain.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Violations,
)
from services.domain.principal import Principal, Role
from services.storage.database import Database, RetryTransaction

T = TypeVar("T")

DEFAULT_PUBLIC_BASE_URL: Final = "http://127.0.0.1:8080"
"""Base URL written into certificates for the CRL and OCSP endpoints when none is configured."""


MAX_PAGE: Final = 500
"""Largest page of a list call."""

MAX_ROW_ID: Final = 2**63 - 1
"""Largest row id: signed 64-bit in both databases (SQLite cannot even bind a larger one)."""


@dataclass(frozen=True)
class RegistryConfig:
    """What the registry needs from the deployment: public URL, CA keys, contact sealing."""

    base_url: str = DEFAULT_PUBLIC_BASE_URL
    key_dir: KeyDirectory | None = None
    sealer: Sealer | None = field(default=None, repr=False)


def refuse_nul(**fields: str | Sequence[str] | None) -> None:
    """Refuse, as INVALID_ARGUMENT, any of ``fields`` that holds a NUL character."""
    # PostgreSQL text cannot hold NUL: such a value would fail in the query, not as bad input.
    v = Violations()
    for name, value in fields.items():
        values = [value] if isinstance(value, str) else list(value or ())
        if any("\x00" in item for item in values):
            v.add(name, "must not contain NUL characters")
    v.raise_if_any()


def _check_row_id(application_id: int) -> None:
    if application_id > MAX_ROW_ID:
        raise NotFound(f"no application {application_id}", reason="APPLICATION_NOT_FOUND")


@contextmanager
def mapped_errors() -> Iterator[None]:
    """Translate the registry library's errors into domain errors."""
    try:
        yield
    except ConcurrentUpdateError as exc:
        raise RetryTransaction from exc
    except InvalidRequestError as exc:
        raise InvalidArgument(
            [FieldViolation(name, problem) for name, problem in exc.violations],
            reason=exc.reason,
        ) from exc
    except NotFoundError as exc:
        raise NotFound(exc.message, reason=exc.reason) from exc
    except ForbiddenError as exc:
        raise PermissionDenied(exc.message, reason=exc.reason) from exc
    except (StateError, KeysUnavailableError) as exc:
        raise FailedPrecondition(exc.message, reason=exc.reason) from exc
    except RegistryError as exc:
        raise FailedPrecondition(exc.message, reason=exc.reason) from exc


def check_province(v: Violations, province: str | None, path: str = "province") -> str | None:
    """Return a valid province filter (None for none), recording a bad one in ``v``."""
    if province is None or province == "":
        return None
    if province not in PROVINCES:
        v.add(path, "must be a GB/T 2260 two-digit province code")
        return None
    return province


def check_operator(v: Violations, operator: str | None, path: str = "operator") -> str | None:
    """Return a valid operator filter (None for none), recording a bad one in ``v``."""
    if not operator:
        return None
    try:
        return validate_operator_id(operator)
    except InvalidOperatorError as exc:
        v.add(path, str(exc))
        return None


def canonical_serial(text: str, path: str = "serial") -> str:
    """Return ``text`` as the canonical hex serial, or raise INVALID_ARGUMENT at ``path``."""
    value = parse_serial(text)
    if value is None:
        raise InvalidArgument([FieldViolation(path, "must be 1-40 hexadecimal digits")])
    return serial_hex(value)


def read_mapped(db: Database, work: Callable[[Connection], T]) -> T:
    """Run ``work`` in a read transaction, the registry library's errors as domain errors."""

    def unit(conn: Connection) -> T:
        with mapped_errors():
            return work(conn)

    return db.read(unit)


def write_mapped(db: Database, work: Callable[[Connection], T]) -> T:
    """Run ``work`` in a write transaction, the registry library's errors as domain errors."""

    def unit(conn: Connection) -> T:
        with mapped_errors():
            return work(conn)

    return db.write(unit)


def operator_keys(config: RegistryConfig) -> authorities.OperatorKeys:
    """The operator CA keys of a process, opened on first use with the configured passphrase."""
    passphrase = config.key_dir.passphrase() if config.key_dir is not None else None
    return authorities.OperatorKeys(passphrase)


class SellerService:
    """What the seller desk and the seller checks share: database, configuration, keys, clock."""

    def __init__(
        self,
        db: Database,
        config: RegistryConfig,
        keys: authorities.OperatorKeys | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self._db = db
        # Where the public reads go (a standby, see reading_from); writes always go to _db.
        self._reads = db
        self._config = config
        self._clock = clock
        # One set of opened CA keys per process, shared by the desk and the checks.
        self._keys = keys if keys is not None else operator_keys(config)

    def reading_from(self, reads: Database | None) -> Self:
        """This service with its public reads (authorizations, CRLs, OCSP) served from ``reads``
        (a standby, where a little staleness is harmless); writes still go to the primary."""
        if reads is None:
            return self
        view = copy.copy(self)  # shares the keys and caches, which hold no per-database state
        view._reads = reads
        return view

    def now(self) -> dt.datetime:
        """The service's clock."""
        return self._clock()


class SellerDesk(SellerService):
    """Applications and authorizations: who may file, review, issue, renew and revoke what."""

    def __init__(
        self,
        db: Database,
        config: RegistryConfig,
        keys: authorities.OperatorKeys | None = None,
        clock: Clock = utc_now,
    ) -> None:
        super().__init__(db, config, keys, clock)
        self._listeners: list[Callable[[], None]] = []

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after every issuance, renewal and revocation this desk attempts.

        The seller checks' shop cache listens, so this process's own changes are in force for
        its next verification, not only after the next poll.
        """
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in self._listeners:
            listener()

    @property
    def base_url(self) -> str:
        """The public base URL certificates point to for CRLs and OCSP."""
        return self._config.base_url

    def _sealer(self) -> Sealer:
        if self._config.sealer is None:
            raise FailedPrecondition(
                "no key to seal application contacts is configured", reason="NO_SEALING_KEY"
            )
        return self._config.sealer

    # -- applications ----------------------------------------------------------------------

    def submit_application(
        self, principal: Principal, request: ApplicationRequest
    ) -> ApplicationRecord:
        """File an application; a marketplace for its own shops, an operator to itself."""
        if principal.role is Role.MARKETPLACE and request.marketplace != principal.organisation:
            raise PermissionDenied(
                f"marketplace {principal.organisation} may apply only for its own shops",
                reason="NOT_YOUR_MARKETPLACE",
            )
        if principal.role is Role.OPERATOR and request.operator != principal.organisation:
            raise PermissionDenied(
                f"operator {principal.organisation} may file applications only to itself",
                reason="NOT_YOUR_AUTHORIZATION",
            )
        if principal.role not in (Role.MARKETPLACE, Role.OPERATOR):
            raise PermissionDenied(
                "only marketplaces and operators submit applications", reason="ROLE_NOT_ALLOWED"
            )
        sealer = self._sealer()
        now = self._clock()
        return write_mapped(
            self._db,
            lambda conn: workflow.submit_application(
                conn, request, submitted_by=principal.name, sealer=sealer, now=now
            ),
        )

    def get_application(self, principal: Principal, application_id: int) -> ApplicationRecord:
        """One application, for its operator (with contact) or the marketplace it names."""
        own_operator = principal.role is Role.OPERATOR
        sealer = self._sealer() if own_operator else None
        _check_row_id(application_id)
        record = read_mapped(
            self._db, lambda conn: workflow.get_application(conn, application_id, sealer=sealer)
        )
        allowed = (own_operator and record.operator == principal.organisation) or (
            principal.role is Role.MARKETPLACE and record.marketplace == principal.organisation
        )
        if not allowed:
            # Not NOT_FOUND: ids are sequential, so existence is no secret worth lying about.
            raise PermissionDenied(
                f"application {application_id} is not addressed to or filed by {principal.name}",
                reason="NOT_YOUR_AUTHORIZATION",
            )
        return record

    def list_applications(
        self, principal: Principal, status: str | None, after_id: int, limit: int
    ) -> list[ApplicationRecord]:
        """The calling operator's applications."""
        sealer = self._sealer()
        return read_mapped(
            self._db,
            lambda conn: workflow.list_applications(
                conn,
                principal.organisation,
                status=status,
                after_id=min(after_id, MAX_ROW_ID),
                limit=min(limit or MAX_PAGE, MAX_PAGE),
                sealer=sealer,
            ),
        )

    def review_application(
        self,
        principal: Principal,
        application_id: int,
        *,
        approve: bool,
        reason: str,
        assessment: str,
    ) -> ApplicationRecord:
        """Approve or deny one of the calling operator's applications."""
        _check_row_id(application_id)
        refuse_nul(reason=reason, assessment=assessment)
        now = self._clock()
        record = write_mapped(
            self._db,
            lambda conn: workflow.review_application(
                conn,
                application_id,
                operator=principal.organisation,
                approve=approve,
                reason=reason,
                assessment=assessment,
                reviewer=principal.name,
                now=now,
            ),
        )
        return self.get_application(principal, record.id)

    # -- authorizations --------------------------------------------------------------------

    def issue(
        self, principal: Principal, application_id: int, validity: dt.timedelta
    ) -> AuthorizationRecord:
        """Issue the authorization of one of the caller's approved applications."""
        _check_row_id(application_id)
        now = self._clock()
        try:
            return write_mapped(
                self._db,
                lambda conn: workflow.issue_authorization(
                    conn,
                    application_id,
                    operator=principal.organisation,
                    keys=self._keys,
                    base_url=self.base_url,
                    validity=validity,
                    now=now,
                ),
            )
        finally:
            # Also after a failure: a lost commit acknowledgement may hide a committed change.
            self._changed()

    def renew(
        self, principal: Principal, serial: str, csr: bytes | None, validity: dt.timedelta
    ) -> tuple[AuthorizationRecord, AuthorizationRecord]:
        """Renew one of the caller's authorizations; returns (new, previous)."""
        canonical = canonical_serial(serial)
        now = self._clock()

        def work(conn: Connection) -> tuple[AuthorizationRecord, AuthorizationRecord]:
            renewed = workflow.renew_authorization(
                conn,
                canonical,
                operator=principal.organisation,
                keys=self._keys,
                base_url=self.base_url,
                csr=csr,
                validity=validity,
                now=now,
            )
            return renewed, workflow.get_authorization(conn, canonical)

        try:
            return write_mapped(self._db, work)
        finally:
            self._changed()

    def revoke(
        self, principal: Principal, serial: str, reason_code: int, comment: str | None
    ) -> AuthorizationRecord:
        """Revoke one of the caller's authorizations."""
        canonical = canonical_serial(serial)
        refuse_nul(comment=comment)
        now = self._clock()
        try:
            return write_mapped(
                self._db,
                lambda conn: workflow.revoke_authorization(
                    conn,
                    canonical,
                    operator=principal.organisation,
                    reason_code=reason_code,
                    keys=self._keys,
                    comment=comment,
                    now=now,
                ),
            )
        finally:
            self._changed()

    def get_authorization(self, serial: str) -> AuthorizationRecord:
        """One authorization (public)."""
        canonical = canonical_serial(serial)
        return read_mapped(self._reads, lambda conn: workflow.get_authorization(conn, canonical))

    def list_authorizations(
        self,
        *,
        operator: str | None,
        marketplace: str | None,
        shop_id: str | None,
        current_only: bool,
        after_serial: str,
        limit: int,
    ) -> list[AuthorizationRecord]:
        """Authorizations by filter (public)."""
        refuse_nul(
            operator=operator, marketplace=marketplace, shop_id=shop_id, after_serial=after_serial
        )
        return read_mapped(
            self._reads,
            lambda conn: workflow.list_authorizations(
                conn,
                operator=operator,
                marketplace=marketplace,
                shop_id=shop_id,
                current_only=current_only,
                after_serial=after_serial,
                limit=min(limit or MAX_PAGE, MAX_PAGE),
            ),
        )

    def search_authorizations(
        self,
        *,
        legal_name: str | None,
        credit_code: str | None,
        after_serial: str,
        limit: int,
    ) -> list[AuthorizationRecord]:
        """Authorizations by store name prefix or credit code (public)."""
        refuse_nul(legal_name=legal_name, credit_code=credit_code, after_serial=after_serial)
        return read_mapped(
            self._reads,
            lambda conn: workflow.search_authorizations(
                conn,
                legal_name=legal_name,
                credit_code=credit_code,
                after_serial=after_serial,
                limit=min(limit or MAX_PAGE, MAX_PAGE),
            ),
        )
