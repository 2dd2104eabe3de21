"""y-protocols sync and awareness messages, byte-compatible with the JavaScript ``y-protocols``."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from .errors import ErrorCode, ProtocolError
from .lib0 import MAX_SAFE_INTEGER, Reader, write_var_bytes, write_var_string, write_var_uint

__all__ = [
    "AuthDenied",
    "AwarenessEntry",
    "AwarenessMessage",
    "QueryAwareness",
    "SyncStep1",
    "SyncStep2",
    "SyncUpdate",
    "YjsLimits",
    "YjsMessage",
    "decode_awareness",
    "decode_message",
    "decode_state_vector",
    "encode_awareness",
    "encode_message",
]


class MessageType(IntEnum):
    SYNC = 0
    AWARENESS = 1
    AUTH = 2
    QUERY_AWARENESS = 3


class SyncType(IntEnum):
    STEP1 = 0
    STEP2 = 1
    UPDATE = 2


@dataclass(frozen=True, slots=True)
class YjsLimits:
    """Bounds every decoder enforces before allocating anything.

    ``max_state_vector`` bounds :func:`decode_state_vector`. A sync step 1 is bounded by
    ``max_message`` alone: how long a state vector may be depends on the document it is
    the state of (one client id more for each client that ever wrote in it), which the
    frame does not tell; whoever answers it bounds it by the document (the server: by its
    own state vector, with ``max_state_vector`` to spare, see ``Room.handshake``).

    ``max_new_clients`` and ``max_deleted_ranges`` bound the work applying one update costs
    (the CRDT core's is super-linear in both; 0: no bound): the clients an update writes as
    that its document does not know yet (a live edit brings at most one; a reconnect, one
    per session its client typed in while away), and the ranges its delete set adds, ranges
    the document had not deleted already (a reconnect sends its whole delete set again,
    which costs little)."""

    max_message: int = 8 * 1024 * 1024
    max_update: int = 8 * 1024 * 1024
    max_state_vector: int = 64 * 1024
    max_awareness_entries: int = 256  # a room's whole table: stock clients send back what they get
    max_awareness_state: int = 16 * 1024
    max_reason: int = 1024
    max_new_clients: int = 256
    max_deleted_ranges: int = 4096


DEFAULT_LIMITS = YjsLimits()


@dataclass(frozen=True, slots=True)
class SyncStep1:
    state_vector: bytes


@dataclass(frozen=True, slots=True)
class SyncStep2:
    update: bytes


@dataclass(frozen=True, slots=True)
class SyncUpdate:
    update: bytes


@dataclass(frozen=True, slots=True)
class AwarenessMessage:
    """An awareness update, kept encoded; see :func:`decode_awareness`."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class AuthDenied:
    reason: str


@dataclass(frozen=True, slots=True)
class QueryAwareness:
    pass


YjsMessage = SyncStep1 | SyncStep2 | SyncUpdate | AwarenessMessage | AuthDenied | QueryAwareness


@dataclass(frozen=True, slots=True)
class AwarenessEntry:
    """One client's awareness state; ``state`` is ``None`` when the client left."""

    client_id: int
    clock: int
    state: dict[str, Any] | None


def encode_message(message: YjsMessage) -> bytes:
    out = bytearray()
    match message:
        case SyncStep1(state_vector=sv):
            out += b"\x00\x00"
            write_var_bytes(out, sv)
        case SyncStep2(update=update):
            out += b"\x00\x01"
            write_var_bytes(out, update)
        case SyncUpdate(update=update):
            out += b"\x00\x02"
            write_var_bytes(out, update)
        case AwarenessMessage(payload=payload):
            out += b"\x01"
            write_var_bytes(out, payload)
        case AuthDenied(reason=reason):
            out += b"\x02\x00"
            write_var_string(out, reason)
        case QueryAwareness():
            out += b"\x03"
    return bytes(out)


def decode_message(data: bytes, limits: YjsLimits = DEFAULT_LIMITS) -> YjsMessage:
    """Decode one y-protocols message (one WebSocket frame of a y-websocket client)."""
    if len(data) > limits.max_message:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"message of {len(data)} bytes over limit")
    reader = Reader(data)
    kind = reader.read_var_uint()
    message: YjsMessage
    if kind == MessageType.SYNC:
        sync_type = reader.read_var_uint()
        if sync_type == SyncType.STEP1:
            message = SyncStep1(reader.read_var_bytes(limits.max_message))
        elif sync_type == SyncType.STEP2:
            message = SyncStep2(reader.read_var_bytes(limits.max_update))
        elif sync_type == SyncType.UPDATE:
            message = SyncUpdate(reader.read_var_bytes(limits.max_update))
        else:
            raise ProtocolError(ErrorCode.MALFORMED, f"unknown sync message type {sync_type}")
    elif kind == MessageType.AWARENESS:
        message = AwarenessMessage(reader.read_var_bytes(limits.max_message))
    elif kind == MessageType.AUTH:
        auth_type = reader.read_var_uint()
        if auth_type != 0:
            raise ProtocolError(ErrorCode.MALFORMED, f"unknown auth message type {auth_type}")
        message = AuthDenied(reader.read_var_string(limits.max_reason))
    elif kind == MessageType.QUERY_AWARENESS:
        message = QueryAwareness()
    else:
        raise ProtocolError(ErrorCode.MALFORMED, f"unknown message type {kind}")
    if not reader.at_end():
        raise ProtocolError(ErrorCode.MALFORMED, f"{reader.remaining} trailing bytes")
    return message


def decode_state_vector(data: bytes, limits: YjsLimits = DEFAULT_LIMITS) -> dict[int, int]:
    """Decode a Yjs state vector: client id -> the number of its structs the sender has."""
    if len(data) > limits.max_state_vector:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"state vector of {len(data)} bytes over limit")
    reader = Reader(data)
    count = reader.read_var_uint()
    if count > reader.remaining // 2:  # each entry takes at least two bytes
        raise ProtocolError(ErrorCode.MALFORMED, f"state vector claims {count} entries")
    clocks: dict[int, int] = {}
    for _ in range(count):
        client_id = reader.read_var_uint()
        clocks[client_id] = reader.read_var_uint()
    if not reader.at_end():
        raise ProtocolError(ErrorCode.MALFORMED, "trailing bytes after the state vector")
    return clocks


def decode_awareness(
    payload: bytes,
    limits: YjsLimits = DEFAULT_LIMITS,
    *,
    oversize: list[tuple[int, int]] | None = None,
) -> list[AwarenessEntry]:
    """Decode an awareness update into its entries; states must be JSON objects or null.

    An entry whose state is over ``limits.max_awareness_state`` bytes is left out, unread
    (its client id and the state's size are added to ``oversize``, if given), and the
    others are taken: a stock client whose editor puts a large value in its state sends it
    at each change, with the states it relays. Too many entries are ``TOO_LARGE``."""
    reader = Reader(payload)
    count = reader.read_var_uint()
    if count > limits.max_awareness_entries:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"{count} awareness entries over limit")
    entries = []
    for _ in range(count):
        client_id = reader.read_var_uint()
        clock = reader.read_var_uint()
        if client_id > MAX_SAFE_INTEGER or clock > MAX_SAFE_INTEGER:  # stock clients misread
            raise ProtocolError(ErrorCode.MALFORMED, "awareness client id or clock over 2^53 - 1")
        raw_bytes = reader.read_var_bytes(max(limits.max_message, limits.max_awareness_state))
        if len(raw_bytes) > limits.max_awareness_state:
            if oversize is not None:
                oversize.append((client_id, len(raw_bytes)))
            continue
        try:
            raw = raw_bytes.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(ErrorCode.MALFORMED, "string is not UTF-8") from exc
        try:
            state = json.loads(raw, parse_constant=_not_json, parse_float=_finite_float)
        except (ValueError, RecursionError) as exc:
            raise ProtocolError(ErrorCode.MALFORMED, "awareness state is not JSON") from exc
        if state is not None and not isinstance(state, dict):
            raise ProtocolError(ErrorCode.MALFORMED, "awareness state is not an object")
        entries.append(AwarenessEntry(client_id, clock, state))
    if not reader.at_end():
        raise ProtocolError(ErrorCode.MALFORMED, "trailing bytes after awareness entries")
    return entries


def encode_awareness(entries: list[AwarenessEntry]) -> bytes:
    out = bytearray()
    write_var_uint(out, len(entries))
    for entry in entries:
        write_var_uint(out, entry.client_id)
        write_var_uint(out, entry.clock)
        write_var_string(out, _json_stringify(entry.state))
    return bytes(out)


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _json_stringify(state: dict[str, Any] | None) -> str:
    """``JSON.stringify``'s bytes: raw non-ASCII text, lone surrogates escaped as ``\\udXXX``."""
    text = json.dumps(state, separators=(",", ":"), ensure_ascii=False)
    return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} overflows a double")
    return value
