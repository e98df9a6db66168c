"""Server interceptors: per-RPC Prometheus metrics and optional bearer-token auth.

Metrics are the outermost interceptor so that requests rejected by auth are counted too (an
operator wants to see a burst of UNAUTHENTICATED). Both wrap the handler the next layer returns
instead of re-implementing dispatch, so they work for all four RPC shapes.
"""

from __future__ import annotations

import hmac
import time
from typing import Any, Callable, Iterable, Iterator

import grpc

from .metrics import ServiceMetrics

# Reachable without a token: load balancers and kubelets probe health without credentials.
AUTH_EXEMPT_PREFIXES = ("/grpc.health.v1.Health/",)


def _rpc_type(handler: grpc.RpcMethodHandler) -> str:
    if handler.request_streaming and handler.response_streaming:
        return "bidi_stream"
    if handler.request_streaming:
        return "client_stream"
    if handler.response_streaming:
        return "server_stream"
    return "unary"


def _split(method: str) -> tuple[str, str]:
    service, _, name = method.lstrip("/").partition("/")
    return service, name


def _code_name(context: grpc.ServicerContext, failed: bool) -> str:
    code = None
    getter = getattr(context, "code", None)
    if callable(getter):
        try:
            code = getter()
        except Exception:
            code = None
    if code is None:
        return "Unknown" if failed else "OK"
    if isinstance(code, grpc.StatusCode):
        return _GO_NAMES.get(code, code.name)
    return str(code)


# go-grpc-prometheus reports codes as Go's codes.Code.String(): "OK", "InvalidArgument", ...
_GO_NAMES = {c: "".join(part.capitalize() for part in c.name.split("_")) for c in grpc.StatusCode}
_GO_NAMES[grpc.StatusCode.OK] = "OK"


def _wrap_handler(handler: grpc.RpcMethodHandler, behavior_wrapper: Callable[[Callable, str], Callable]) -> grpc.RpcMethodHandler:
    kind = _rpc_type(handler)
    if kind == "unary":
        return grpc.unary_unary_rpc_method_handler(
            behavior_wrapper(handler.unary_unary, kind), handler.request_deserializer,
            handler.response_serializer)
    if kind == "server_stream":
        return grpc.unary_stream_rpc_method_handler(
            behavior_wrapper(handler.unary_stream, kind), handler.request_deserializer,
            handler.response_serializer)
    if kind == "client_stream":
        return grpc.stream_unary_rpc_method_handler(
            behavior_wrapper(handler.stream_unary, kind), handler.request_deserializer,
            handler.response_serializer)
    return grpc.stream_stream_rpc_method_handler(
        behavior_wrapper(handler.stream_stream, kind), handler.request_deserializer,
        handler.response_serializer)


class MetricsInterceptor(grpc.ServerInterceptor):
    """go-grpc-prometheus' server metrics: started/handled counters, message counters and the
    handling-time histogram, labelled by type, service, method (and code when handled)."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        self.m = metrics

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        service, method = _split(handler_call_details.method)
        m = self.m

        def wrapper(behavior: Callable, kind: str) -> Callable:
            labels = (kind, service, method)

            def count_in(requests: Iterable[Any]) -> Iterator[Any]:
                for req in requests:
                    m.grpc_msg_received.labels(*labels).inc()
                    yield req

            def finish(context: grpc.ServicerContext, start: float, failed: bool,
                       code: str | None = None) -> None:
                m.grpc_handled.labels(*labels, code or _code_name(context, failed)).inc()
                m.grpc_handling.labels(*labels).observe(time.perf_counter() - start)

            if kind in ("unary", "client_stream"):
                def unary_out(request_or_iter, context):
                    start = time.perf_counter()
                    m.grpc_started.labels(*labels).inc()
                    if kind == "unary":
                        m.grpc_msg_received.labels(*labels).inc()
                    else:
                        request_or_iter = count_in(request_or_iter)
                    try:
                        response = behavior(request_or_iter, context)
                    except BaseException:
                        finish(context, start, True)
                        raise
                    m.grpc_msg_sent.labels(*labels).inc()
                    finish(context, start, False)
                    return response
                return unary_out

            def stream_out(request_or_iter, context):
                start = time.perf_counter()
                m.grpc_started.labels(*labels).inc()
                if kind == "server_stream":
                    m.grpc_msg_received.labels(*labels).inc()
                else:
                    request_or_iter = count_in(request_or_iter)
                try:
                    for response in behavior(request_or_iter, context):
                        m.grpc_msg_sent.labels(*labels).inc()
                        yield response
                except GeneratorExit:  # the client went away mid-stream
                    finish(context, start, True, "Canceled")
                    raise
                except BaseException:
                    finish(context, start, True)
                    raise
                finish(context, start, False)
            return stream_out

        return _wrap_handler(handler, wrapper)


class BearerTokenInterceptor(grpc.ServerInterceptor):
    """Require ``authorization: Bearer <token>`` on every RPC except health checks."""

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("auth token: empty")
        self._expected = f"Bearer {token}".encode()

    def _ok(self, metadata: Iterable[tuple[str, Any]] | None) -> bool:
        for key, value in metadata or ():
            if key.lower() == "authorization":
                got = value.encode() if isinstance(value, str) else bytes(value)
                return hmac.compare_digest(got, self._expected)
        return False

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(AUTH_EXEMPT_PREFIXES):
            return handler
        if self._ok(handler_call_details.invocation_metadata):
            return handler

        def wrapper(behavior: Callable, kind: str) -> Callable:
            def deny(request_or_iter, context):
                context.abort(grpc.StatusCode.UNAUTHENTICATED,
                              "authorization: missing or wrong bearer token "
                              "(send metadata 'authorization: Bearer <token>')")
            if kind in ("server_stream", "bidi_stream"):
                def deny_stream(request_or_iter, context):
                    deny(request_or_iter, context)
                    yield from ()
                return deny_stream
            return deny

        return _wrap_handler(handler, wrapper)
