"""Domain errors that map one-to-one onto gRPC status codes.

Servicers raise these; the runtime's handler wrapper turns them into a status with the message,
so no handler has to know about ``context.abort`` and nothing ends as UNKNOWN.
"""

from __future__ import annotations

import grpc

SHORT_CHARS = 40  # at most this much of a bad value is quoted back
MAX_MESSAGE_CHARS = 500  # hard cap on any status message (gRPC trailers are small)


def short(value: object, limit: int = SHORT_CHARS) -> str:
    """``repr`` of a bad value for a message, cut to a short prefix that says how long it was.

    Echoing a 1 MB value would make the status itself too big for the client (it then sees
    RESOURCE_EXHAUSTED instead of the real error), and says nothing a prefix does not.
    """
    text = repr(value)
    if len(text) <= limit:
        return text
    size = (f"{len(value):,} chars" if isinstance(value, str) else f"{len(value):,} bytes"
            if isinstance(value, bytes) else f"{len(text):,} chars as text")
    return f"{text[:limit]}… ({size})"


def cap_message(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """A status message cut to ``limit`` characters, whatever a handler put in it."""
    return message if len(message) <= limit else message[: limit - 1] + "…"


class ServiceError(Exception):
    code = grpc.StatusCode.INTERNAL

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidArgument(ServiceError):
    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


class NotFound(ServiceError):
    code = grpc.StatusCode.NOT_FOUND


class FailedPrecondition(ServiceError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(ServiceError):
    code = grpc.StatusCode.UNAVAILABLE


class AlreadyExists(ServiceError):
    code = grpc.StatusCode.ALREADY_EXISTS


class ResourceExhausted(ServiceError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
