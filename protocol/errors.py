"""The one error type raised for anything a peer sends that cannot be accepted."""

from __future__ import annotations

from enum import IntEnum

__all__ = ["ErrorCode", "ProtocolError"]


class ErrorCode(IntEnum):
    """Error codes, used both in ``Error`` messages and as WebSocket close codes.

    The 4000-4999 range is reserved by RFC 6455 for applications; the last three
    digits mirror the nearest HTTP status where one fits.
    """

    MALFORMED = 4000  # a frame that does not decode
    UNAUTHORIZED = 4001  # missing, invalid or expired token
    FORBIDDEN = 4003  # authenticated, but not allowed (wrong repo)
    NOT_FOUND = 4004  # unknown repository or branch
    READ_ONLY = 4005  # a write from a read-only connection
    BAD_NAME = 4006  # an invalid repository, branch or path name
    UNSUPPORTED_VERSION = 4007  # hello with a protocol version we do not speak
    SLOW_READER = 4008  # the peer did not drain its send queue
    TOO_LARGE = 4009  # a message or document over a configured limit
    INVALID_UPDATE = 4010  # a CRDT update the document rejected
    UNKNOWN_DOCUMENT = 4011  # a message for a document handle that is not open
    ALREADY_OPEN = 4012  # open of a handle that is already in use
    NOT_TEXT = 4013  # the path names a binary file, a directory or a submodule
    CONFLICT = 4015  # the name is taken, histories are unrelated, or a merge conflicts
    CANCELLED = 4016  # the request was superseded or cancelled before it was answered
    RELOAD = 4017  # the peer's copy belongs to another epoch of the document: discard it, reopen
    DAMAGED = 4018  # the document's stored history (or its branch's ref) is damaged: until repaired
    DOCUMENT_FULL = 4019  # the update would take the document past its size cap; refused
    RESYNC = 4020  # the update deletes what the server was not sent: reconnect, sync again
    RATE_LIMITED = 4029  # too many requests
    INTERNAL = 4500  # a server-side failure; the peer did nothing wrong
    UNAVAILABLE = 4502  # a backend (a completion worker, say) failed or is missing
    SHUTTING_DOWN = 4503  # the server is stopping; reconnect later
    TIMEOUT = 4504  # a backend did not answer in time


class ProtocolError(Exception):
    """A peer sent something that breaks the protocol.

    Every decoder in :mod:`protocol` raises this and only this for malformed input.
    """

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
