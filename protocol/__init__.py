"""Sans-I/O protocol layer: y-protocols messages, the engine's msgpack messages, names."""

from __future__ import annotations

from .errors import ErrorCode, ProtocolError
from .names import DocId, validate_branch, validate_path, validate_repo

__all__ = [
    "DocId",
    "ErrorCode",
    "ProtocolError",
    "validate_branch",
    "validate_path",
    "validate_repo",
]
