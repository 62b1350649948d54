"""The one interceptor every call passes: authenticate, authorize by role, log, map errors."""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, cast

import grpc
from grpc_status import rpc_status

from services.domain.errors import (
    DeadlineExceeded,
    PermissionDenied,
    RealnameError,
)
from services.domain.principal import Principal, Role
from services.metrics import observe_rpc
from services.rpc.auth import Authenticator
from services.rpc.status import grpc_code, status_for

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

    def check(self, method: str, principal: Principal) -> None:
        """Raises PermissionDenied unless the principal's role may call ``method``."""
        service = method.strip("/").split("/", 1)[0]
        if service in PUBLIC_SERVICES:
            return
        allowed = self._rules.get(method.strip("/"), self._rules.get(service))
        if allowed is None or principal.role not in allowed:
            raise PermissionDenied(
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


def _aborted_by_handler(context: grpc.ServicerContext) -> bool:
    # ServicerContext.code() exists at run time since grpcio 1.38 but not in the stubs.
    return cast(Any, context).code() is not None


class RealnameInterceptor(_Interceptor):
    """Wraps every handler with authentication, access control, deadlines, logging and errors."""

    def __init__(self, authenticator: Authenticator, policy: AccessPolicy) -> None:
        self._auth = authenticator
        self._policy = policy
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
                wrapped = (
                    self._wrap_streaming(method, behavior)
                    if streams_out
                    else self._wrap_unary(method, behavior)
                )
                return factory(
                    wrapped,
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )
        return handler

    def _enter(self, method: str, context: grpc.ServicerContext) -> Principal:
        principal = self._auth.principal(context)
        self._policy.check(method, principal)
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            raise DeadlineExceeded("the deadline passed before work began", reason="DEADLINE")
        _current_principal.set(principal)
        return principal

    def _wrap_unary(self, method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        def call(request: Any, context: grpc.ServicerContext) -> Any:
            start = time.perf_counter()
            who = "-"
            try:
                who = self._enter(method, context).name
                response = behavior(request, context)
            except RealnameError as err:
                _log(method, who, grpc_code(err), start, err.reason)
                context.abort_with_status(rpc_status.to_status(status_for(err)))
            except Exception:
                if _aborted_by_handler(context):
                    raise
                log.exception("unhandled error in %s", method)
                _log(method, who, grpc.StatusCode.INTERNAL, start, "INTERNAL")
                context.abort(grpc.StatusCode.INTERNAL, "internal error")
            _log(method, who, grpc.StatusCode.OK, start, "")
            return response

        return call

    def _wrap_streaming(self, method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        def call(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            start = time.perf_counter()
            who = "-"
            try:
                who = self._enter(method, context).name
                yield from behavior(request, context)
            except RealnameError as err:
                _log(method, who, grpc_code(err), start, err.reason)
                context.abort_with_status(rpc_status.to_status(status_for(err)))
            except Exception:
                if _aborted_by_handler(context):
                    raise
                log.exception("unhandled error in %s", method)
                _log(method, who, grpc.StatusCode.INTERNAL, start, "INTERNAL")
                context.abort(grpc.StatusCode.INTERNAL, "internal error")
            _log(method, who, grpc.StatusCode.OK, start, "")

        return call


def _log(method: str, principal: str, code: grpc.StatusCode, start: float, reason: str) -> None:
    # One line per RPC and its metrics; no personal data: requests are never logged.
    observe_rpc(method, code.name, time.perf_counter() - start)
    if log.isEnabledFor(logging.INFO):
        fields = {
            "event": "rpc",
            "method": method,
            "principal": principal,
            "code": code.name,
            "reason": reason,
            "latency_ms": round((time.perf_counter() - start) * 1000, 3),
        }
        log.info("rpc", extra={"fields": fields})
