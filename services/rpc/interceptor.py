"""The one interceptor every call passes: authenticate, authorize by role, log, map errors."""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NoReturn, cast

import grpc
from google.protobuf.message import DecodeError
from grpc_status import rpc_status

from services.domain import audit, retry_budget
from services.domain.errors import (
    DeadlineExceeded,
    FieldViolation,
    InvalidArgument,
    PermissionDenied,
    RealnameError,
)
from services.domain.principal import Principal, Role
from services.domain.ratelimit import RateLimiter
from services.rpc.auth import Authenticator
from services.rpc.status import grpc_code, status_for
from services.runtime import logs
from services.runtime.metrics import MethodMetrics, OutcomeObserver, outcome_observer

log = logging.getLogger("realname.rpc")

_current_principal: contextvars.ContextVar[Principal] = contextvars.ContextVar("principal")

# Services whose every method any authenticated caller may use.
PUBLIC_SERVICES = frozenset({"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
                             "grpc.reflection.v1.ServerReflection"})  # fmt: skip


def current_principal() -> Principal:
    """The authenticated caller of the RPC running on this thread."""
    return _current_principal.get()


class AccessPolicy:
    """Which roles may call which service (or single method)."""

    def __init__(self, rules: dict[str, frozenset[Role]]) -> None:
        self._rules = rules

    def roles_for(self, method: str) -> frozenset[Role]:
        """The roles that may call ``method`` (every role for health and reflection)."""
        service = _service_of(method)
        if service in PUBLIC_SERVICES:
            return _EVERY_ROLE
        return self._rules.get(method.strip("/"), self._rules.get(service, frozenset()))

    def check(self, method: str, principal: Principal) -> None:
        """Raises PermissionDenied unless the principal's role may call ``method``."""
        if principal.role not in self.roles_for(method):
            raise _role_refused(method, principal)


_EVERY_ROLE = frozenset(Role)


def _service_of(method: str) -> str:
    return method.strip("/").split("/", 1)[0]


def _role_refused(method: str, principal: Principal) -> PermissionDenied:
    return PermissionDenied(
        f"role {principal.role.value} may not call {method}",
        reason="ROLE_NOT_ALLOWED",
        metadata={"role": principal.role.value, "method": method},
    )


if TYPE_CHECKING:
    _Interceptor = grpc.ServerInterceptor[Any, Any]
    _Handler = grpc.RpcMethodHandler[Any, Any]
else:
    _Interceptor = grpc.ServerInterceptor
    _Handler = grpc.RpcMethodHandler


def _client_gone(exc: Exception, context: grpc.ServicerContext) -> bool:
    # A request stream raises grpc.RpcError once the client cancelled or its deadline passed;
    # gRPC has already ended the call and re-raising it is silent: no server error.
    return isinstance(exc, grpc.RpcError) and not context.is_active()


def _aborted_by_handler(context: grpc.ServicerContext) -> bool:
    # ServicerContext.code() exists at run time since grpcio 1.38 but not in the stubs.
    return cast(Any, context).code() is not None


# Stands in for a request whose bytes did not decode: gRPC itself would answer INTERNAL.
_MALFORMED = object()


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def decode(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError:  # bad UTF-8 in a string field, corrupt wire format
            return _MALFORMED

    return decode


def _malformed() -> InvalidArgument:
    violation = FieldViolation("request", "is not a valid encoding of the request message")
    return InvalidArgument([violation], reason="MALFORMED_REQUEST")


def _checked(requests: Iterator[Any]) -> Iterator[Any]:
    for request in requests:
        if request is _MALFORMED:
            raise _malformed()
        yield request


def _decoded(request: Any, client_streams: bool) -> Any:
    # The request (or request stream) the handler gets; a malformed one is INVALID_ARGUMENT.
    if client_streams:
        return _checked(request)
    if request is _MALFORMED:
        raise _malformed()
    return request


def _refusing_malformed(behavior: Callable[..., Any], client_streams: bool) -> Callable[..., Any]:
    """Runs ``behavior`` once its request(s) decoded; a malformed one is INVALID_ARGUMENT."""

    def call(request: Any, context: grpc.ServicerContext) -> Any:
        return behavior(_decoded(request, client_streams), context)

    return call


def _audited(
    method: str,
    behavior: Callable[..., Any],
    sink: audit.AuditSink,
    *,
    streams_out: bool,
    subscriber_data: bool,
    client_streams: bool,
) -> Callable[..., Any]:
    """Refuses malformed requests, and hands the documents a call touches to the audit trail.

    A ``subscriber_data`` method's call is recorded even when it noted no document; a
    malformed request is recorded as refused (INVALID_ARGUMENT).
    """

    def finish(
        context: audit.AuditContext, outcome: str, grpc_context: grpc.ServicerContext
    ) -> None:
        # Never hold a call past its deadline waiting for its audit record: give up early
        # enough that the UNAVAILABLE answer still reaches the caller.
        remaining = grpc_context.time_remaining()
        if remaining is not None:
            remaining -= retry_budget.ANSWER_MARGIN_S
        sink.submit(current_principal().name, method, outcome, context, remaining)

    def call(request: Any, grpc_context: grpc.ServicerContext) -> Any:
        context = audit.begin(subscriber_data=subscriber_data)
        try:
            response = behavior(_decoded(request, client_streams), grpc_context)
        except RealnameError as err:
            finish(context, err.kind.value, grpc_context)
            raise
        except Exception:
            finish(context, "INTERNAL", grpc_context)
            raise
        else:
            finish(context, "OK", grpc_context)  # waits for the audit commit when the call wrote
            return response
        finally:
            audit.end()

    def stream(request: Any, grpc_context: grpc.ServicerContext) -> Iterator[Any]:
        context = audit.begin(subscriber_data=subscriber_data)
        try:
            yield from behavior(_decoded(request, client_streams), grpc_context)
        except RealnameError as err:
            finish(context, err.kind.value, grpc_context)
            raise
        except Exception:
            finish(context, "INTERNAL", grpc_context)
            raise
        else:
            finish(context, "OK", grpc_context)
        finally:
            audit.end()

    return stream if streams_out else call


class RealnameInterceptor(_Interceptor):
    """Wraps every handler with authentication, access control, deadlines, logging and errors."""

    def __init__(
        self,
        authenticator: Authenticator,
        policy: AccessPolicy,
        principal_limiter: RateLimiter | None = None,
        audit_sink: audit.AuditSink | None = None,
        *,
        unaudited: frozenset[str] = frozenset(),
        metrics: bool = True,
    ) -> None:
        self._audit = audit_sink
        # Off only to measure the layer's cost (REALNAME_LAYERS_OFF=metrics).
        self._metrics = metrics
        # Methods declared not to touch subscriber data; every other one (health and reflection
        # aside) is recorded at each call: an undeclared method is audited, not let through.
        self._unaudited = unaudited
        self._auth = authenticator
        self._policy = policy
        self._limiter = principal_limiter
        # Wrapped handlers by method: building them on every call cost ~2% of a cheap RPC.
        self._wrapped: dict[str, _Handler] = {}

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], _Handler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _Handler | None:
        """Returns the method's handler wrapped in the call discipline."""
        method: str = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None:
            return cached
        wrapped = self._wrap(method, continuation(handler_call_details))
        if wrapped is not None:  # unknown method names are not cached: callers choose them
            self._wrapped[method] = wrapped
        return wrapped

    def _wrap(self, method: str, handler: _Handler | None) -> _Handler | None:
        if handler is None:
            return None
        kinds = (
            ("unary_unary", grpc.unary_unary_rpc_method_handler, False),
            ("unary_stream", grpc.unary_stream_rpc_method_handler, True),
            ("stream_unary", grpc.stream_unary_rpc_method_handler, False),
            ("stream_stream", grpc.stream_stream_rpc_method_handler, True),
        )
        for attr, factory, streams_out in kinds:
            behavior = getattr(handler, attr)
            if behavior is not None:
                client_streams = attr.startswith("stream")
                if self._audit is not None:
                    public = _service_of(method) in PUBLIC_SERVICES
                    subscriber_data = not public and method not in self._unaudited
                    behavior = _audited(
                        method,
                        behavior,
                        self._audit,
                        streams_out=streams_out,
                        subscriber_data=subscriber_data,
                        client_streams=client_streams,
                    )
                else:
                    behavior = _refusing_malformed(behavior, client_streams)
                wrapped = (
                    self._wrap_streaming(method, behavior)
                    if streams_out
                    else self._wrap_unary(method, behavior)
                )
                return factory(
                    wrapped,
                    request_deserializer=_tolerant(handler.request_deserializer),
                    response_serializer=handler.response_serializer,
                )
        return handler

    def _entry(self, method: str) -> Callable[[grpc.ServicerContext], Principal]:
        """The checks before a call of ``method`` runs, with what they need computed once."""
        # Health and reflection stay unlimited: a throttled probe would report a healthy server
        # as down.
        limiter = None if _service_of(method) in PUBLIC_SERVICES else self._limiter
        allowed = self._policy.roles_for(method)
        authenticate = self._auth.principal

        def enter(context: grpc.ServicerContext) -> Principal:
            principal = authenticate(context)
            # Rate limits come before the policy, so a flood of refused calls is throttled too.
            if limiter is not None:
                limiter.check(principal.name)
            if principal.role not in allowed:
                raise _role_refused(method, principal)
            remaining = context.time_remaining()
            if remaining is not None and remaining <= 0:
                raise DeadlineExceeded("the deadline passed before work began", reason="DEADLINE")
            _current_principal.set(principal)
            retry_budget.set_deadline(remaining)
            return principal

        return enter

    def _wrap_unary(self, method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        enter = self._entry(method)
        counted = MethodMetrics(method) if self._metrics else None
        observe = outcome_observer(method) if counted is not None else None

        def call(request: Any, context: grpc.ServicerContext) -> Any:
            start = time.perf_counter()
            principal: Principal | None = None
            try:
                principal = enter(context)
                response = behavior(request, context)
            except Exception as exc:
                _fail(exc, method, principal, context, start, counted=counted, observe=observe)
            _log(
                method,
                principal,
                grpc.StatusCode.OK,
                start,
                "",
                counted=counted,
                observe=observe,
                response=response,
            )
            return response

        return call

    def _wrap_streaming(self, method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        enter = self._entry(method)
        counted = MethodMetrics(method) if self._metrics else None
        observe = outcome_observer(method) if counted is not None else None

        def call(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            start = time.perf_counter()
            principal: Principal | None = None
            try:
                principal = enter(context)
                if observe is None:
                    yield from behavior(request, context)
                else:
                    for message in behavior(request, context):
                        observe(principal, "", message)
                        yield message
            except Exception as exc:
                # A stream's verdicts were observed message by message: errors only count.
                _fail(exc, method, principal, context, start, counted=counted, observe=None)
            _log(method, principal, grpc.StatusCode.OK, start, "", counted=counted)

        return call


def _fail(
    exc: Exception,
    method: str,
    principal: Principal | None,
    context: grpc.ServicerContext,
    start: float,
    *,
    counted: MethodMetrics | None,
    observe: OutcomeObserver | None,
) -> NoReturn:
    """Logs a failed call and ends it with the status its error maps to (unary and streams)."""
    if isinstance(exc, RealnameError):
        _log(method, principal, grpc_code(exc), start, exc.reason, counted=counted, observe=observe)
        context.abort_with_status(rpc_status.to_status(status_for(exc)))
        raise exc  # abort_with_status raised already; this line is for the type checker
    if _aborted_by_handler(context):
        raise exc
    if _client_gone(exc, context):
        _log(method, principal, grpc.StatusCode.CANCELLED, start, "CLIENT_GONE", counted=counted)
        raise exc
    log.error("unhandled error in %s", method, exc_info=exc)
    _log(
        method,
        principal,
        grpc.StatusCode.INTERNAL,
        start,
        "INTERNAL",
        counted=counted,
        observe=observe,
    )
    context.abort(grpc.StatusCode.INTERNAL, "internal error")
    raise exc


def _log(
    method: str,
    principal: Principal | None,
    code: grpc.StatusCode,
    start: float,
    reason: str,
    *,
    counted: MethodMetrics | None,
    observe: OutcomeObserver | None = None,
    response: Any = None,
) -> None:
    # One line per RPC and its metrics; no personal data: requests are never logged.
    if counted is not None:
        counted.observe(code.name, time.perf_counter() - start)
    if observe is not None and principal is not None:
        observe(principal, reason, response)
    if log.isEnabledFor(logging.INFO):
        fields = {
            "event": "rpc",
            "method": method,
            "principal": "-" if principal is None else principal.name,
            "code": code.name,
            "reason": reason,
            "latency_ms": round((time.perf_counter() - start) * 1000, 3),
        }
        logs.info_fields(log, "rpc", fields)
