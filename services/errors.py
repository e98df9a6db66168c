"""Error messages the service sends: bounded, free of server paths, and machine-readable.

Why: a client-controlled value echoed into a message once made a 1 MB status that the transport
refused (RESOURCE_EXHAUSTED instead of the error), and loader exceptions carried server paths.
Every status leaves through :func:`abort`, which trims the message to :data:`MAX_ERROR_BYTES`,
replaces absolute paths, and for INVALID_ARGUMENT attaches a ``google.rpc.BadRequest`` with the
field violation(s), so clients need not parse the text.

The service's own errors live here too, under hwcompress's one root
(:class:`automl.core.HwcompressError`), each with the status code it answers
(:data:`STATUS_CODES`); :func:`abort_error` ends an RPC with any of them, naming its ``field``.
"""

from __future__ import annotations

import re
from typing import NoReturn, Sequence

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from automl.core import HwcompressError


class SpecError(HwcompressError, ValueError):
    """A JobSpec field is invalid. ``field`` is the proto field path, e.g. ``budgets[1].value``;
    ``not_found``: the field names something that does not exist (an upload id)."""

    def __init__(self, field_name: str, reason: str, not_found: bool = False) -> None:
        super().__init__(f"{field_name}: {reason}", field=field_name, reason=reason)
        self.not_found = not_found


class IdempotencyConflict(HwcompressError):
    """An idempotency key was reused with a different spec (``field``: ``idempotency_key``)."""


class QueueFull(HwcompressError):
    """The queue holds max_queued jobs already (RESOURCE_EXHAUSTED)."""


class ShuttingDown(HwcompressError):
    """The manager no longer accepts jobs (UNAVAILABLE)."""


class UploadError(HwcompressError, ValueError):
    """The upload is malformed or does not fit its architecture (INVALID_ARGUMENT); the message
    starts with the field it is about (``header.size_bytes: ...``, ``chunk: ...``)."""


class UploadTooLarge(UploadError):
    """Over the server's limit (RESOURCE_EXHAUSTED)."""


STATUS_CODES: tuple[tuple[type[HwcompressError], grpc.StatusCode], ...] = (
    (IdempotencyConflict, grpc.StatusCode.ALREADY_EXISTS),
    (QueueFull, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (ShuttingDown, grpc.StatusCode.UNAVAILABLE),
    (UploadTooLarge, grpc.StatusCode.RESOURCE_EXHAUSTED),
)
"""The errors that do not answer INVALID_ARGUMENT, most specific first (a SpecError about
something that does not exist answers NOT_FOUND, see :func:`status_code`)."""


def status_code(exc: HwcompressError) -> grpc.StatusCode:
    """The status an error of ours answers: :data:`STATUS_CODES`, NOT_FOUND for a SpecError
    naming what does not exist, INVALID_ARGUMENT for the rest of the client's mistakes
    (``ValueError``s), FAILED_PRECONDITION otherwise."""
    if isinstance(exc, SpecError) and exc.not_found:
        return grpc.StatusCode.NOT_FOUND
    for cls, code in STATUS_CODES:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INVALID_ARGUMENT if isinstance(exc, ValueError) else \
        grpc.StatusCode.FAILED_PRECONDITION

MAX_ERROR_BYTES = 1024
ECHO_CHARS = 64
_PATH_RE = re.compile(r"(?<![\w.])(?:/[\w.@+\-]+){2,}/?")


def short(value: object, limit: int = ECHO_CHARS) -> str:
    """``repr`` of a client-supplied value, cut to ``limit`` characters (never echo 1 MB back)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 5] + "...'" + f"({len(str(value))} chars)"


def sanitize(text: str, limit: int = MAX_ERROR_BYTES) -> str:
    """Absolute paths -> ``<path>`` (keeping the file name), then cut to ``limit`` UTF-8 bytes."""
    text = _PATH_RE.sub(lambda m: f"<path>/{m.group(0).rstrip('/').rsplit('/', 1)[-1]}", text)
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[:limit - 3].decode(errors="ignore") + "..."


def field_of(message: str) -> str:
    """The field path a message starts with (``"spec.budgets[0].value: ..."``)."""
    head, sep, _ = message.partition(": ")
    return head if sep and " " not in head else ""


def status_for(code: grpc.StatusCode, message: str,
               violations: Sequence[tuple[str, str]] = ()) -> grpc.Status:
    """A ``grpc.Status`` with the trimmed message and, for INVALID_ARGUMENT, a BadRequest."""
    message = sanitize(message)
    details = []
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        if not violations and field_of(message):
            violations = [(field_of(message), message[len(field_of(message)) + 2:])]
        bad = error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=sanitize(f, 256),
                                                        description=sanitize(d, 512))
            for f, d in violations])
        detail = any_pb2.Any()
        detail.Pack(bad)
        details.append(detail)
    proto = status_pb2.Status(code=getattr(code_pb2, code.name), message=message, details=details)
    return rpc_status.to_status(proto)


def abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str,
          violations: Sequence[tuple[str, str]] = ()) -> NoReturn:
    """End the RPC with ``code`` (see the module docstring)."""
    context.abort_with_status(status_for(code, message, violations))
    raise AssertionError("unreachable")  # abort_with_status raises


def abort_error(context: grpc.ServicerContext, exc: HwcompressError, prefix: str = "") -> NoReturn:
    """End the RPC with ``exc``'s status (:func:`status_code`); the message starts with
    ``prefix`` + its ``field`` when it has one (``spec.budgets[0].value: ...``)."""
    text = f"{prefix}{exc.field}: {exc.reason}" if exc.field else f"{prefix}{exc}"
    abort(context, status_code(exc), text)


def bad_request(details: grpc.RpcError) -> list[tuple[str, str]]:
    """Client side: the (field, description) pairs of an error's BadRequest detail."""
    status = rpc_status.from_call(details)  # type: ignore[arg-type]
    out = []
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            out += [(v.field, v.description) for v in bad.field_violations]
    return out
