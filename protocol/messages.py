"""The engine's own protocol on ``/ws``: one msgpack map per binary WebSocket message."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, ClassVar

import msgpack

from .errors import ErrorCode, ProtocolError

__all__ = [
    "PROTOCOL_VERSION",
    "Awareness",
    "Call",
    "Close",
    "Error",
    "Event",
    "Hello",
    "Kind",
    "Limits",
    "Message",
    "Open",
    "Opened",
    "Ping",
    "Pong",
    "Result",
    "Sync",
    "SyncStep",
    "Welcome",
    "check_shape",
    "decode",
    "decode_hello",
    "encode",
]

PROTOCOL_VERSION = 1


class Kind(IntEnum):
    HELLO = 1
    WELCOME = 2
    OPEN = 3
    OPENED = 4
    CLOSE = 5
    SYNC = 6
    AWARENESS = 7
    ERROR = 8
    PING = 9
    PONG = 10
    CALL = 11
    RESULT = 12
    EVENT = 13


class SyncStep(IntEnum):
    """The y-protocols sync message types."""

    STEP1 = 0  # data is a state vector
    STEP2 = 1  # data is an update answering a step 1
    UPDATE = 2  # data is an incremental update


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds the decoder enforces; anything over them is a ``ProtocolError``."""

    max_message: int = 8 * 1024 * 1024
    max_str: int = 8192  # above MAX_PATH, so an overlong name gets BAD_NAME
    max_bin: int = 8 * 1024 * 1024
    max_fields: int = 16  # top-level fields of one message
    max_items: int = 1024  # entries of any array or map inside a message
    max_depth: int = 8  # nesting of arrays and maps inside a message
    # values inside one message, all depths together (each map key, map value and array
    # element counts one), so that what decoding builds is bounded whatever the bytes hold
    max_values: int = 16384
    max_hello: int = 64 * 1024  # bytes of the first message, read before authentication


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True, slots=True)
class Hello:
    """Client -> server, first message: protocol version and credentials."""

    KIND: ClassVar[Kind] = Kind.HELLO
    version: int
    token: str | None = None
    user: str | None = None  # dev mode only (no server secret, loopback)


@dataclass(frozen=True, slots=True)
class Welcome:
    """Server -> client: the hello was accepted."""

    KIND: ClassVar[Kind] = Kind.WELCOME
    version: int
    user: str
    session: str


@dataclass(frozen=True, slots=True)
class Open:
    """Client -> server: open document ``doc`` under the client-chosen handle ``ref``."""

    KIND: ClassVar[Kind] = Kind.OPEN
    ref: int
    doc: str


@dataclass(frozen=True, slots=True)
class Opened:
    """Server -> client: ``ref`` is open; ``writable`` is false for read-only access."""

    KIND: ClassVar[Kind] = Kind.OPENED
    ref: int
    doc: str
    writable: bool


@dataclass(frozen=True, slots=True)
class Close:
    """Either way: the document under ``ref`` is closed."""

    KIND: ClassVar[Kind] = Kind.CLOSE
    ref: int


@dataclass(frozen=True, slots=True)
class Sync:
    """Either way: a y-protocols sync message for the document under ``ref``."""

    KIND: ClassVar[Kind] = Kind.SYNC
    ref: int
    step: SyncStep
    data: bytes


@dataclass(frozen=True, slots=True)
class Awareness:
    """Either way: a y-protocols awareness update for the document under ``ref``."""

    KIND: ClassVar[Kind] = Kind.AWARENESS
    ref: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Error:
    """Server -> client: a request failed; ``ref`` names the document when one is concerned."""

    KIND: ClassVar[Kind] = Kind.ERROR
    code: ErrorCode
    message: str
    ref: int | None = None


@dataclass(frozen=True, slots=True)
class Ping:
    """Client -> server: answered by ``Pong`` once every earlier update of this
    connection is durable and broadcast."""

    KIND: ClassVar[Kind] = Kind.PING
    id: int


@dataclass(frozen=True, slots=True)
class Pong:
    KIND: ClassVar[Kind] = Kind.PONG
    id: int


@dataclass(frozen=True, slots=True)
class Call:
    """Client -> server: run operation ``op`` (for example ``"branch.fork"``) with ``args``;
    answered by one ``Result`` with the same ``id``."""

    KIND: ClassVar[Kind] = Kind.CALL
    id: int
    op: str
    args: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Result:
    """Server -> client: the answer to ``Call`` ``id``: ``value`` on success, else ``code``
    and ``message``."""

    KIND: ClassVar[Kind] = Kind.RESULT
    id: int
    value: Any = None
    code: ErrorCode | None = None
    message: str | None = None

    @property
    def ok(self) -> bool:
        return self.code is None


@dataclass(frozen=True, slots=True)
class Event:
    """Server -> client: something happened on a ``topic`` the client subscribed to."""

    KIND: ClassVar[Kind] = Kind.EVENT
    topic: str
    data: dict[str, Any] = dataclasses.field(default_factory=dict)


Message = (
    Hello
    | Welcome
    | Open
    | Opened
    | Close
    | Sync
    | Awareness
    | Error
    | Ping
    | Pong
    | Call
    | Result
    | Event
)

_CLASSES: dict[int, type[Any]] = {
    cls.KIND: cls
    for cls in (
        Hello,
        Welcome,
        Open,
        Opened,
        Close,
        Sync,
        Awareness,
        Error,
        Ping,
        Pong,
        Call,
        Result,
        Event,
    )
}

_MAX_INT = 2**53 - 1


def _field_types(cls: type[Any]) -> dict[str, tuple[Any, ...]]:
    hints = typing.get_type_hints(cls)
    table: dict[str, tuple[Any, ...]] = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        table[f.name] = tuple(typing.get_origin(o) or o for o in options)
    return table


def _optional(cls: type[Any], name: str) -> bool:
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


# What the msgpack value that starts with each byte is, for ``check_shape``: (kind, size). A
# scalar is ``size`` bytes long. A string's or bin's length, and an array's or map's entry
# count, is held in the ``size`` bytes after the first (big end first), or for size 0 in the
# first byte's low bits (5 for a string, 4 for an array or map).
_SCALAR, _RAW, _ARRAY, _MAP, _STOP = range(5)


def _scan_table() -> tuple[tuple[int, int], ...]:
    sizes = {0xC0: 1, 0xC2: 1, 0xC3: 1, 0xCA: 5, 0xCB: 9, 0xCC: 2, 0xCD: 3, 0xCE: 5, 0xCF: 9}
    sizes |= {0xD0: 2, 0xD1: 3, 0xD2: 5, 0xD3: 9}
    lengths = {0xC4: 1, 0xC5: 2, 0xC6: 4, 0xD9: 1, 0xDA: 2, 0xDB: 4}
    table = []
    for byte in range(256):
        if byte <= 0x7F or byte >= 0xE0:  # positive and negative fixint
            table.append((_SCALAR, 1))
        elif byte <= 0x8F:
            table.append((_MAP, 0))
        elif byte <= 0x9F:
            table.append((_ARRAY, 0))
        elif byte <= 0xBF:
            table.append((_RAW, 0))
        elif byte in sizes:
            table.append((_SCALAR, sizes[byte]))
        elif byte in lengths:
            table.append((_RAW, lengths[byte]))
        elif byte in (0xDC, 0xDD):
            table.append((_ARRAY, 2 if byte == 0xDC else 4))
        elif byte in (0xDE, 0xDF):
            table.append((_MAP, 2 if byte == 0xDE else 4))
        else:  # 0xc1 (never used) and the extension types: msgpack refuses them
            table.append((_STOP, 0))
    return tuple(table)


_SCAN = _scan_table()


def check_shape(data: bytes, limits: Limits) -> None:
    """Walk the msgpack value ``data`` holds without building it, and refuse nesting deeper
    than ``max_depth`` and more than ``max_values`` values, before msgpack builds any of them.

    A container's entries are counted from its header and strings and bins are skipped by
    their length, so the walk takes one step per value, at most ``max_values`` steps whatever
    the size of ``data``. It stops quietly where msgpack refuses ``data`` anyway, at the same
    place (a truncation, a byte that starts no value, an extension type, a container over
    ``max_items`` entries), so that msgpack says what is wrong: what msgpack builds before
    that place is within the limits too.
    """
    end = len(data)
    pos = 0
    left = limits.max_values
    max_array = limits.max_items
    max_map = max(limits.max_fields, limits.max_items)
    max_depth = limits.max_depth
    table = _SCAN
    outer: list[int] = []  # values still to read in each enclosing container
    todo = 1  # values still to read in the current one
    while True:
        while todo:
            todo -= 1
            if pos >= end:
                return
            kind, size = table[data[pos]]
            if kind == _SCALAR:
                pos += size
                continue
            if kind == _RAW:
                if size:
                    pos += 1 + size + int.from_bytes(data[pos + 1 : pos + 1 + size])
                else:
                    pos += 1 + (data[pos] & 0x1F)
                continue
            if kind == _STOP:
                return
            head = pos + 1 + size
            count = int.from_bytes(data[pos + 1 : head]) if size else data[pos] & 0x0F
            pos = head
            if pos > end or count > (max_map if kind == _MAP else max_array):
                return
            if len(outer) > max_depth:
                raise ProtocolError(ErrorCode.MALFORMED, f"nested deeper than {max_depth}")
            if kind == _MAP:
                count *= 2
            left -= count
            if left < 0:
                raise ProtocolError(
                    ErrorCode.MALFORMED, f"more than {limits.max_values} values in one message"
                )
            outer.append(todo)
            todo = count
        if not outer:
            return
        todo = outer.pop()


_FIELDS = {kind: _field_types(cls) for kind, cls in _CLASSES.items()}
_DEFAULTED = {
    kind: frozenset(f.name for f in dataclasses.fields(cls) if _optional(cls, f.name))
    for kind, cls in _CLASSES.items()
}


def encode(message: Message) -> bytes:
    """Encode one message as a msgpack map ``{"t": kind, field: value, ...}``."""
    body: dict[str, Any] = {"t": int(message.KIND)}
    for f in dataclasses.fields(message):
        value = getattr(message, f.name)
        if value is None:
            continue
        body[f.name] = int(value) if isinstance(value, IntEnum) else value
    return msgpack.packb(body, use_bin_type=True)  # type: ignore[no-any-return]


def _refuse_ext(code: int, data: bytes) -> Any:
    raise ProtocolError(ErrorCode.MALFORMED, f"msgpack extension type {code} is not allowed")


def _check(kind: Kind, name: str, value: Any, allowed: tuple[Any, ...]) -> Any:
    for option in allowed:
        if option is Any:
            return value
        if option is type(None) and value is None:
            return None
        if option is bool:
            if isinstance(value, bool):
                return value
            continue
        if issubclass(option, IntEnum):
            if isinstance(value, int) and not isinstance(value, bool):
                try:
                    return option(value)
                except ValueError:
                    continue
            continue
        if option is int:
            if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_INT:
                return value
            continue
        if isinstance(value, option):
            return value
    raise ProtocolError(ErrorCode.MALFORMED, f"{kind.name}.{name}: bad value {value!r:.80}")


def _unpack_failure(exc: Exception, data: bytes) -> str:
    """What msgpack found wrong with ``data``, in a few words (some of its errors have no
    text), and how the frame starts: short enough for a close frame's reason (123 bytes)."""
    what = str(exc)[:60]
    if not what:
        invalid = isinstance(exc, msgpack.FormatError)
        what = "a byte that starts no msgpack value" if invalid else type(exc).__name__
    size = f"{len(data)} byte{'' if len(data) == 1 else 's'}"
    return f"{what} ({size}: {data[:6].hex(' ')}{'...' if len(data) > 6 else ''})"


def decode(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Message:
    """Decode one message; raise ``ProtocolError`` for anything malformed or over a limit."""
    if len(data) > limits.max_message:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"message of {len(data)} bytes over limit")
    check_shape(data, limits)
    try:
        body = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            ext_hook=_refuse_ext,
            max_str_len=limits.max_str,
            max_bin_len=limits.max_bin,
            max_array_len=limits.max_items,
            max_map_len=max(limits.max_fields, limits.max_items),
            max_ext_len=0,
        )
    except ProtocolError:
        raise
    except Exception as exc:  # msgpack raises a zoo of types for malformed input
        raise ProtocolError(
            ErrorCode.MALFORMED, f"not a msgpack message: {_unpack_failure(exc, data)}"
        ) from exc
    if not isinstance(body, dict):
        raise ProtocolError(ErrorCode.MALFORMED, "message is not a map")
    if len(body) > limits.max_fields + 1:
        raise ProtocolError(ErrorCode.MALFORMED, f"message has {len(body)} fields")
    raw_kind = body.pop("t", None)
    if not isinstance(raw_kind, int) or isinstance(raw_kind, bool) or raw_kind not in _CLASSES:
        raise ProtocolError(ErrorCode.MALFORMED, f"unknown message kind {raw_kind!r:.40}")
    kind = Kind(raw_kind)
    fields = _FIELDS[kind]
    unknown = set(body) - set(fields)
    if unknown:
        raise ProtocolError(
            ErrorCode.MALFORMED, f"{kind.name}: unknown fields {sorted(unknown, key=repr)!r:.80}"
        )
    values: dict[str, Any] = {}
    for name, allowed in fields.items():
        if name not in body:
            if type(None) in allowed or name in _DEFAULTED[kind]:
                continue
            raise ProtocolError(ErrorCode.MALFORMED, f"{kind.name}: missing field {name!r}")
        values[name] = _check(kind, name, body[name], allowed)
    return _CLASSES[kind](**values)  # type: ignore[no-any-return]


def decode_hello(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Hello:
    """Decode the first message of a connection, which must be a ``Hello`` of at most
    ``limits.max_hello`` bytes (a larger one is refused with ``TOO_LARGE`` unread)."""
    if len(data) > limits.max_hello:
        raise ProtocolError(
            ErrorCode.TOO_LARGE,
            f"hello of {len(data)} bytes over the limit of {limits.max_hello} bytes",
        )
    hello = decode(data, limits)
    if not isinstance(hello, Hello):
        raise ProtocolError(ErrorCode.MALFORMED, "the first message must be hello")
    return hello
