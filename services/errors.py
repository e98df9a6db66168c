"""Error messages the service sends: bounded, free of server paths, and machine-readable.

Why: a client-controlled value echoed into a message once made a 1 MB status that the transport
refused (RESOURCE_EXHAUSTED instead of the error), and loader exceptions carried server paths.
Every status leaves through :func:`abort`, which trims the message to :data:`MAX_ERROR_BYTES`,
replaces absolute paths, and for INVALID_ARGUMENT attaches a ``google.rpc.BadRequest`` with the
field violation(s), so clients need not parse the text.
"""

from __future__ import annotations

import re
from typing import NoReturn, Sequence

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

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
