"""A bounded pool for streaming RPCs, so streams can never starve unary calls or health.

Why: the sync gRPC server runs each RPC on a thread of one pool, and a WatchJob stream holds its
thread for as long as the client keeps it open. 64 open watches used every thread and from then
on every RPC, health included, timed out. Streams (WatchJob, GetResult, UploadModel, Health.Watch)
now take a slot first: at most ``max_streams`` server-wide (fewer than the RPC threads, so some
threads are always left for unary calls) and ``max_per_client`` per client (peer address without
the port); past either, the stream is refused at once with RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import grpc

from .errors import abort
from .interceptors import _wrap_handler

MIN_UNARY_THREADS = 8
"""RPC threads kept free of streams whatever the limits say."""


def client_key(peer: str) -> str:
    """``ipv4:127.0.0.1:5555`` / ``ipv6:[::1]:5555`` -> the address without the port."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        return f"{kind}:{rest.rpartition(':')[0]}"
    return peer  # unix sockets and the like: the whole peer string


class StreamLimiter:
    """Counts open streams, server-wide and per client. Thread-safe."""

    def __init__(self, max_streams: int, max_per_client: int) -> None:
        if max_streams < 1 or max_per_client < 1:
            raise ValueError("stream limits must be ≥ 1")
        self.max_streams = max_streams
        self.max_per_client = min(max_per_client, max_streams)
        self._lock = threading.Lock()
        self._open = 0
        self._by_client: dict[str, int] = {}

    def acquire(self, client: str) -> str | None:
        """None when a slot was taken, else why not."""
        with self._lock:
            if self._open >= self.max_streams:
                return f"the server holds its limit of {self.max_streams} open streams"
            if self._by_client.get(client, 0) >= self.max_per_client:
                return f"this client holds its limit of {self.max_per_client} open streams"
            self._open += 1
            self._by_client[client] = self._by_client.get(client, 0) + 1
            return None

    def release(self, client: str) -> None:
        with self._lock:
            self._open -= 1
            left = self._by_client.get(client, 1) - 1
            if left > 0:
                self._by_client[client] = left
            else:
                self._by_client.pop(client, None)

    @property
    def open(self) -> int:
        with self._lock:
            return self._open


class StreamLimitInterceptor(grpc.ServerInterceptor):
    """Wraps every streaming handler in a :class:`StreamLimiter` slot."""

    def __init__(self, limiter: StreamLimiter) -> None:
        self.limiter = limiter

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or not (handler.request_streaming or handler.response_streaming):
            return handler
        limiter = self.limiter

        def wrapper(behavior: Callable, kind: str) -> Callable:
            def refuse(context: grpc.ServicerContext, why: str) -> None:
                abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED,
                      f"streams: {why}; close a stream or retry later")

            @contextmanager
            def slot(context: grpc.ServicerContext) -> Iterator[None]:
                client = client_key(context.peer())
                why = limiter.acquire(client)
                if why is not None:
                    refuse(context, why)  # raises: nothing was acquired
                try:
                    yield
                finally:
                    limiter.release(client)

            if kind in ("server_stream", "bidi_stream"):
                def stream(request_or_iter: Any, context: grpc.ServicerContext):
                    with slot(context):
                        yield from behavior(request_or_iter, context)
                return stream

            def unary_out(request_iter: Any, context: grpc.ServicerContext):
                with slot(context):
                    return behavior(request_iter, context)
            return unary_out

        return _wrap_handler(handler, wrapper)
