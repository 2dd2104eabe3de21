"""Engine msgpack messages: round trips, and every malformed input refused with ProtocolError."""

from __future__ import annotations

import struct
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import messages as m
from protocol.errors import ErrorCode, ProtocolError

MAX_INT = 2**53 - 1

ints = st.integers(0, MAX_INT)
texts = st.text(max_size=100)
message_strategies: dict[type[Any], st.SearchStrategy[Any]] = {
    m.Hello: st.builds(m.Hello, ints, st.none() | texts, st.none() | texts),
    m.Welcome: st.builds(m.Welcome, ints, texts, texts),
    m.Open: st.builds(m.Open, ints, texts),
    m.Opened: st.builds(m.Opened, ints, texts, st.booleans()),
    m.Close: st.builds(m.Close, ints),
    m.Sync: st.builds(m.Sync, ints, st.sampled_from(m.SyncStep), st.binary(max_size=512)),
    m.Awareness: st.builds(m.Awareness, ints, st.binary(max_size=512)),
    m.Error: st.builds(m.Error, st.sampled_from(ErrorCode), texts, st.none() | ints),
    m.Ping: st.builds(m.Ping, ints),
    m.Pong: st.builds(m.Pong, ints),
    m.Call: st.builds(m.Call, ints, texts, st.dictionaries(texts, st.none() | ints | texts)),
    m.Result: st.builds(
        m.Result,
        ints,
        st.none() | ints | texts | st.lists(texts, max_size=5),
        st.none() | st.sampled_from(ErrorCode),
        st.none() | texts,
    ),
    m.Event: st.builds(m.Event, texts, st.dictionaries(texts, ints | texts)),
}
any_message: st.SearchStrategy[m.Message] = st.one_of(*message_strategies.values())

# One valid example of each kind, as the raw map the decoder sees.
VALID: dict[m.Kind, dict[str, Any]] = {
    m.Kind.HELLO: {"t": 1, "version": 1, "token": "tok", "user": "alice"},
    m.Kind.WELCOME: {"t": 2, "version": 1, "user": "alice", "session": "s1"},
    m.Kind.OPEN: {"t": 3, "ref": 1, "doc": "demo/main:README.md"},
    m.Kind.OPENED: {"t": 4, "ref": 1, "doc": "demo/main:README.md", "writable": True},
    m.Kind.CLOSE: {"t": 5, "ref": 1},
    m.Kind.SYNC: {"t": 6, "ref": 1, "step": 0, "data": b"\x00"},
    m.Kind.AWARENESS: {"t": 7, "ref": 1, "data": b"\x00"},
    m.Kind.ERROR: {"t": 8, "code": 4000, "message": "bad", "ref": 1},
    m.Kind.PING: {"t": 9, "id": 1},
    m.Kind.PONG: {"t": 10, "id": 1},
    m.Kind.CALL: {"t": 11, "id": 1, "op": "branch.list", "args": {"repo": "demo"}},
    m.Kind.RESULT: {"t": 12, "id": 1, "value": [{"name": "main"}]},
    m.Kind.EVENT: {"t": 13, "topic": "repo:demo", "data": {"kind": "commit"}},
}


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def refuse(data: bytes, limits: m.Limits = m.DEFAULT_LIMITS) -> ProtocolError:
    """``decode`` must raise ProtocolError, and nothing else."""
    try:
        message = m.decode(data, limits)
    except ProtocolError as exc:
        return exc
    pytest.fail(f"decoded {message!r} from {data[:40]!r}")


def refuse_without_allocating(
    data: bytes,
    refuser: Callable[[bytes], ProtocolError] = refuse,
    bound: int = 4 * 1024 * 1024,
) -> ProtocolError:
    """``refuser(data)``'s refusal, made with less than ``bound`` bytes allocated."""
    tracemalloc.start()
    try:
        exc = refuser(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < bound, f"peak {peak} bytes"
    return exc


# -- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", list(message_strategies), ids=lambda c: c.__name__)
@given(data=st.data())
def test_round_trip(cls: type[Any], data: st.DataObject) -> None:
    message = data.draw(message_strategies[cls])
    decoded = m.decode(m.encode(message))
    assert decoded == message
    assert type(decoded) is cls
    for name in ("step", "code"):
        if hasattr(message, name):
            assert type(getattr(decoded, name)) is type(getattr(message, name))


def test_every_kind_has_a_strategy_and_an_example() -> None:
    assert {cls.KIND for cls in message_strategies} == set(m.Kind)
    assert set(VALID) == set(m.Kind)


@pytest.mark.parametrize("kind", list(m.Kind), ids=lambda k: k.name)
def test_valid_examples_decode(kind: m.Kind) -> None:
    message = m.decode(pack(VALID[kind]))
    assert kind == message.KIND


def test_encoding_is_a_map_with_the_kind_and_without_nones() -> None:
    assert msgpack.unpackb(m.encode(m.Hello(1))) == {"t": 1, "version": 1}
    assert msgpack.unpackb(m.encode(m.Sync(3, m.SyncStep.UPDATE, b"u"))) == {
        "t": 6,
        "ref": 3,
        "step": 2,
        "data": b"u",
    }
    assert m.decode(pack({"t": 8, "code": 4009, "message": "x"})) == m.Error(
        ErrorCode.TOO_LARGE, "x"
    )
    assert m.decode(pack({"t": 1, "version": 1, "token": None})) == m.Hello(1)


def test_limits_at_the_boundary() -> None:
    assert m.decode(pack({"t": 9, "id": MAX_INT})) == m.Ping(MAX_INT)
    assert m.decode(pack({"t": 9, "id": 0})) == m.Ping(0)
    doc = "x" * m.DEFAULT_LIMITS.max_str
    assert m.decode(pack({"t": 3, "ref": 1, "doc": doc})) == m.Open(1, doc)


# -- rejections --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "obj",
    [None, 1, -1, 1.5, True, "hello", b"hello", [], [1, {"t": 9}]],
    ids=repr,
)
def test_not_a_map(obj: Any) -> None:
    assert refuse(pack(obj)).code == ErrorCode.MALFORMED


@pytest.mark.parametrize(
    "kind",
    [None, 0, 99, 255, -1, 2**64 - 1, True, False, 1.0, "1", b"\x01", "HELLO"],
    ids=repr,
)
def test_unknown_kind(kind: Any) -> None:
    body: dict[str, Any] = {"id": 1}
    if kind is not None:
        body["t"] = kind
    assert refuse(pack(body)).code == ErrorCode.MALFORMED


@pytest.mark.parametrize("kind", list(m.Kind), ids=lambda k: k.name)
def test_unknown_field(kind: m.Kind) -> None:
    assert refuse(pack({**VALID[kind], "extra": 1})).code == ErrorCode.MALFORMED
    assert refuse(pack({**VALID[kind], b"extra": 1, "other": 2})).code == ErrorCode.MALFORMED
    assert refuse(pack({**VALID[kind], b"t": 1})).code == ErrorCode.MALFORMED


@pytest.mark.parametrize("kind", list(m.Kind), ids=lambda k: k.name)
def test_missing_field(kind: m.Kind) -> None:
    optional = {n for n, value in m._FIELDS[kind].items() if type(None) in value}
    optional |= m._DEFAULTED[kind]
    for name in VALID[kind]:
        if name == "t" or name in optional:
            continue
        body = {key: value for key, value in VALID[kind].items() if key != name}
        assert refuse(pack(body)).code == ErrorCode.MALFORMED, name


WRONG_VALUES: dict[str, list[Any]] = {
    "int": [True, False, -1, -(2**63), MAX_INT + 1, 2**64 - 1, 1.0, 0.5, "1", b"1", None, [], {}],
    "str": [1, True, 1.5, b"text", None, [], {"a": 1}, "x" * (m.DEFAULT_LIMITS.max_str + 1)],
    "bytes": [1, True, "text", None, [], {"a": b""}],
    "bool": [1, 0, "true", None, b"\x01", 1.0],
    "step": [3, -1, True, "0", 0.0, None],
    "code": [0, 1000, 4999, -4000, True, "4000", 4000.0, None],
    "map": [1, True, "text", b"x", [], [1]],
    "any": [],
}

FIELD_KIND: dict[str, str] = {
    "version": "int",
    "ref": "int",
    "id": "int",
    "token": "str",
    "user": "str",
    "session": "str",
    "doc": "str",
    "message": "str",
    "data": "bytes",
    "writable": "bool",
    "step": "step",
    "code": "code",
    "op": "str",
    "topic": "str",
    "args": "map",
    "value": "any",
}
KIND_FIELD_KIND: dict[tuple[m.Kind, str], str] = {(m.Kind.EVENT, "data"): "map"}


def _wrong_cases() -> list[tuple[m.Kind, str, Any]]:
    cases = []
    for kind, body in VALID.items():
        for name in body:
            if name == "t":
                continue
            field_kind = KIND_FIELD_KIND.get((kind, name), FIELD_KIND[name])
            for value in WRONG_VALUES[field_kind]:
                optional = type(None) in m._FIELDS[kind][name]
                if value is None and optional:
                    continue
                cases.append((kind, name, value))
    return cases


@pytest.mark.parametrize(
    ("kind", "name", "value"),
    _wrong_cases(),
    ids=lambda v: v.name if isinstance(v, m.Kind) else repr(v)[:20],
)
def test_wrong_types(kind: m.Kind, name: str, value: Any) -> None:
    assert refuse(pack({**VALID[kind], name: value})).code == ErrorCode.MALFORMED


def test_nested_arrays_and_maps_as_values() -> None:
    for value in ([1], [[1]], {"a": 1}, {"a": {"b": 1}}, [], {}):
        assert refuse(pack({"t": 9, "id": value})).code == ErrorCode.MALFORMED
        assert refuse(pack({"t": 3, "ref": 1, "doc": value})).code == ErrorCode.MALFORMED


def test_map_keys_that_are_not_strings() -> None:
    assert refuse(pack({"t": 9, "id": 1, 5: 1})).code == ErrorCode.MALFORMED
    assert refuse(b"\x83\xa1t\x09\xa2id\x01\xc0\x01").code == ErrorCode.MALFORMED  # nil key


@pytest.mark.parametrize(
    "data",
    [
        pack(msgpack.ExtType(5, b"abc")),
        pack({"t": 9, "id": msgpack.ExtType(1, b"\x01")}),
        pack({"t": 9, "id": msgpack.Timestamp(0)}),
        pack({"t": 7, "ref": 1, "data": msgpack.ExtType(0, b"")}),
        b"\x82\xa1t\x09\xa2id\xc7\x00\x05",  # ext 8 of length 0
        b"\x82\xa1t\x09\xa2id\xc7\x00\xff",  # empty timestamp
        b"\x82\xa1t\x09\xa2id\xd4\x01\x00",  # fixext 1
    ],
    ids=[
        "top-level",
        "value",
        "timestamp",
        "empty-ext",
        "ext8-empty",
        "timestamp-empty",
        "fixext1",
    ],
)
def test_ext_types(data: bytes) -> None:
    assert refuse(data).code == ErrorCode.MALFORMED


HUNDRED_MB = 100 * 1024 * 1024


@pytest.mark.parametrize(
    "data",
    [
        b"\xdf\xff\xff\xff\xff",  # map32 of 2**32 - 1 entries
        b"\xdf\xff\xff\xff\xff\xa1t\x09",
        b"\xdd\xff\xff\xff\xff",  # array32 of 2**32 - 1 entries
        b"\xdd\xff\xff\xff\xff\x01\x02\x03",
        b"\x82\xa1t\x09\xa2id\xdd\xff\xff\xff\xff",
        b"\x91" * 10_000 + b"\xc0",  # 10,000 nested arrays
        b"\x81\xa1a" * 10_000 + b"\xc0",  # 10,000 nested maps
        b"\x82\xa1t\x09\xa2id" + b"\x81\xa1a" * 10_000 + b"\xc0",
        b"\xc6" + struct.pack(">I", HUNDRED_MB) + b"hello",  # bin32, 5 bytes present
        b"\xdb" + struct.pack(">I", HUNDRED_MB) + b"hello",  # str32, 5 bytes present
        b"\x83\xa1t\x07\xa3ref\x01\xa4data\xc6" + struct.pack(">I", HUNDRED_MB) + b"hello",
        b"\x83\xa1t\x03\xa3ref\x01\xa3doc\xdb" + struct.pack(">I", HUNDRED_MB) + b"hello",
        b"\xc6\xff\xff\xff\xff",
        b"\xc9\xff\xff\xff\xff\x05",  # ext32
    ],
    ids=[
        "map32",
        "map32-one-entry",
        "array32",
        "array32-some",
        "array32-value",
        "nested-arrays",
        "nested-maps",
        "nested-maps-value",
        "bin32",
        "str32",
        "bin32-value",
        "str32-value",
        "bin32-max",
        "ext32",
    ],
)
def test_msgpack_bombs(data: bytes) -> None:
    refuse_without_allocating(data)


def test_bin_and_str_over_limits() -> None:
    limits = m.Limits(max_bin=8, max_str=4)
    assert m.decode(pack({"t": 7, "ref": 1, "data": b"x" * 8}), limits) == m.Awareness(1, b"x" * 8)
    refuse(pack({"t": 7, "ref": 1, "data": b"x" * 9}), limits)
    assert m.decode(pack({"t": 3, "ref": 1, "doc": "abcd"}), limits) == m.Open(1, "abcd")
    refuse(pack({"t": 3, "ref": 1, "doc": "abcde"}), limits)
    refuse(pack({"t": 3, "ref": 1, "doc": "é" * 3}), limits)  # 6 bytes


def test_too_many_fields() -> None:
    body: dict[str, Any] = {"t": 9, "id": 1}
    body.update({f"f{i}": i for i in range(m.DEFAULT_LIMITS.max_fields)})
    refuse(pack(body))


def test_call_arguments_are_bounded() -> None:
    assert m.decode(pack({"t": 11, "id": 1, "op": "x"})) == m.Call(1, "x", {})
    nested: Any = 1
    for _ in range(m.DEFAULT_LIMITS.max_depth - 1):
        nested = [nested]
    assert m.decode(pack({"t": 11, "id": 1, "op": "x", "args": {"a": nested}})).args == {
        "a": nested
    }
    assert refuse(pack({"t": 11, "id": 1, "op": "x", "args": {"a": [nested]}})).code == (
        ErrorCode.MALFORMED
    )
    wide = list(range(m.DEFAULT_LIMITS.max_items + 1))
    refuse(pack({"t": 11, "id": 1, "op": "x", "args": {"a": wide}}))
    refuse(pack({"t": 11, "id": 1, "op": "x", "args": [1]}))
    refuse(pack({"t": 11, "id": 1, "op": 5, "args": {}}))
    refuse(pack({"t": 12, "id": 1, "code": 1}))  # not an error code


# -- what decoding builds is bounded by the values a message holds, not by its bytes --------

# 1024 arrays of 1024 empty maps, every array within max_items, 3 deep: one byte a map
EMPTY_MAPS = b"\xdc\x04\x00" + (b"\xdc\x04\x00" + b"\x80" * 1024) * 1024
CALL_HEAD = pack({"t": 11, "id": 1, "op": "x"})[1:]  # the fields, without the map's header


def call_with_args(args: bytes) -> bytes:
    """A ``Call`` whose ``args`` are the msgpack bytes ``args``: 8 values, and args'."""
    return b"\x84" + CALL_HEAD + pack("args") + args


def values_in(value: Any) -> int:
    """What the decoder counts inside ``value``: each map key, map value and array element."""
    if isinstance(value, dict):
        return sum(2 + values_in(key) + values_in(item) for key, item in value.items())
    if isinstance(value, list):
        return sum(1 + values_in(item) for item in value)
    return 0


def assert_counted(frame: bytes, values: int, **limits: int) -> m.Message:
    """``frame`` holds exactly ``values`` values: it decodes with a limit of that many."""
    message = m.decode(frame, m.Limits(max_values=values, **limits))
    refused = refuse(frame, m.Limits(max_values=values - 1, **limits))
    assert refused.code == ErrorCode.MALFORMED
    assert refused.message == f"more than {values - 1} values in one message"
    return message


def test_millions_of_empty_maps_are_refused_unbuilt() -> None:
    """7 MiB of empty maps, within the size, length and depth limits: once 7 million dicts
    and a walk over them (seconds, and half a gigabyte), now refused after counting."""
    bomb = call_with_args(pack({"a": []})[:-1] + b"\x97" + EMPTY_MAPS * 7)
    assert len(bomb) <= m.DEFAULT_LIMITS.max_message
    started = time.perf_counter()
    refused = refuse_without_allocating(bomb)
    assert time.perf_counter() - started < 1.0
    assert refused.code == ErrorCode.MALFORMED
    assert refused.message == f"more than {m.DEFAULT_LIMITS.max_values} values in one message"


def test_values_at_the_limit() -> None:
    limit = m.DEFAULT_LIMITS.max_values
    args: dict[str, list[Any]] = {f"k{i}": [0] * 1022 for i in range(15)}
    args["a"] = [{} for _ in range(limit - 8 - values_in(args) - 2)]
    assert 8 + values_in(args) == limit  # the call's 4 fields and values, then the args'
    assert m.decode(pack({"t": 11, "id": 1, "op": "x", "args": args})).args == args
    args["a"].append({})
    refused = refuse(pack({"t": 11, "id": 1, "op": "x", "args": args}))
    assert refused.message == f"more than {limit} values in one message"


def test_keys_and_empty_containers_count() -> None:
    assert_counted(pack({"t": 9, "id": 1}), 4)
    assert_counted(pack({"t": 11, "id": 1, "op": "x", "args": {}}), 8)
    assert_counted(pack({"t": 11, "id": 1, "op": "x", "args": {"a": [[], {}, [{}]]}}), 14)
    assert_counted(pack({"t": 11, "id": 1, "op": "x", "args": {"a": {"b": {"c": 1}}}}), 14)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(encoded, id=encoded.hex() if len(encoded) < 12 else encoded[:6].hex())
        for encoded in [
            # every integer width, both signs
            *(pack(n) for n in (0, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32)),
            *(pack(n) for n in (2**64 - 1, -1, -32, -33, -128, -129, -32768, -32769)),
            *(pack(n) for n in (-(2**31), -(2**31) - 1, -(2**63))),
            pack(None),
            pack(True),
            pack(False),
            pack(1.5),
            msgpack.packb(1.5, use_single_float=True),
            # strings and bins at every length header, and headers longer than needed
            *(pack("s" * n) for n in (0, 31, 32, 255, 256, 8192)),
            *(pack(b"b" * n) for n in (0, 255, 256, 65535, 65536)),
            b"\xd9\x01s",
            b"\xda\x00\x01s",
            b"\xdb\x00\x00\x00\x01s",
            b"\xc5\x00\x01b",
            b"\xc6\x00\x00\x00\x01b",
            # arrays and maps at every header
            pack([1] * 15),
            pack([1] * 16),
            pack({f"{i}": i for i in range(15)}),
            pack({f"{i}": i for i in range(16)}),
            b"\xdd\x00\x00\x00\x02\x01\x02",
            b"\xdf\x00\x00\x00\x01\xa1k\x01",
            b"\xde\x00\x01\xa1k\x92\x01\x02",
        ]
    ],
)
def test_every_msgpack_value_is_skipped_whole(value: bytes) -> None:
    """Counted within ``[value, [1, 2]]``: a value skipped by too few or too many bytes would
    have the array after it counted wrong, or not at all."""
    inner = msgpack.unpackb(value)
    args = b"\x81" + pack("a") + b"\x92" + value + pack([1, 2])
    decoded = assert_counted(call_with_args(args), 8 + 2 + 2 + values_in(inner) + 2)
    assert isinstance(decoded, m.Call)
    assert decoded.args == {"a": [inner, [1, 2]]}


msgpack_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | st.binary(max_size=300),
    lambda inner: st.lists(inner, max_size=20) | st.dictionaries(texts, inner, max_size=20),
    max_leaves=60,
)


@given(msgpack_values)
def test_values_are_counted_as_msgpack_reads_them(value: Any) -> None:
    frame = pack({"t": 11, "id": 1, "op": "x", "args": {"a": value}})
    call = assert_counted(frame, 8 + 2 + values_in(value), max_depth=64)
    assert isinstance(call, m.Call)
    assert call.args == {"a": value}


def test_empty_containers_nest_as_deep_as_any() -> None:
    for empty in ([], {}):
        nested: Any = empty
        for _ in range(m.DEFAULT_LIMITS.max_depth - 2):
            nested = [nested]
        assert m.decode(pack({"t": 11, "id": 1, "op": "x", "args": {"a": nested}})).args == {
            "a": nested
        }
        refused = refuse(pack({"t": 11, "id": 1, "op": "x", "args": {"a": [nested]}}))
        assert refused.message == f"nested deeper than {m.DEFAULT_LIMITS.max_depth}"


def test_nesting_is_refused_before_what_follows_is_built() -> None:
    deep = b"\x91" * (m.DEFAULT_LIMITS.max_depth + 1) + b"\xc0"
    bomb = call_with_args(b"\x82" + pack("a") + deep + pack("b") + b"\x97" + EMPTY_MAPS * 7)
    assert refuse_without_allocating(bomb).message == (
        f"nested deeper than {m.DEFAULT_LIMITS.max_depth}"
    )


def test_what_msgpack_refuses_it_still_says() -> None:
    """The count stops at what msgpack refuses anyway, and msgpack's words are kept."""
    head = call_with_args(b"\x81" + pack("a") + b"\x92" + pack([1, 2]))
    assert "exceeds max_array_len(1024)" in refuse(head + b"\xdd\x00\x01\x00\x00").message
    assert "incomplete input" in refuse(head + b"\xdd\x00\x00\x00").message
    assert "a byte that starts no msgpack value" in refuse(head + b"\xc1").message
    assert "exceeds max_ext_len(0)" in refuse(head + b"\xd4\x01\x00").message


# -- the first message ------------------------------------------------------------------------


def test_hello_is_decoded_up_to_its_own_limit() -> None:
    limits = m.DEFAULT_LIMITS
    largest = m.Hello(m.PROTOCOL_VERSION, "t" * limits.max_str, "u" * limits.max_str)
    assert len(m.encode(largest)) <= limits.max_hello
    assert m.decode_hello(m.encode(largest)) == largest
    frame = m.encode(m.Hello(m.PROTOCOL_VERSION, "t" * 100))
    assert m.decode_hello(frame, m.Limits(max_hello=len(frame))).token == "t" * 100
    refused = refuse_hello(frame, m.Limits(max_hello=len(frame) - 1))
    assert refused.code == ErrorCode.TOO_LARGE
    assert refused.message == (
        f"hello of {len(frame)} bytes over the limit of {len(frame) - 1} bytes"
    )


def test_a_hello_over_its_limit_is_refused_unread() -> None:
    bomb = b"\x84" + pack("t") + pack(1) + pack("version") + pack(1) + pack("user") + pack("x")
    bomb += pack("junk") + b"\x97" + EMPTY_MAPS * 7
    refused = refuse_without_allocating(bomb, refuse_hello, bound=64 * 1024)
    assert refused.code == ErrorCode.TOO_LARGE


def test_the_first_message_must_be_a_hello() -> None:
    refused = refuse_hello(m.encode(m.Ping(1)))
    assert (refused.code, refused.message) == (
        ErrorCode.MALFORMED,
        "the first message must be hello",
    )
    assert refuse_hello(b"\xc1").code == ErrorCode.MALFORMED


def refuse_hello(data: bytes, limits: m.Limits = m.DEFAULT_LIMITS) -> ProtocolError:
    try:
        hello = m.decode_hello(data, limits)
    except ProtocolError as exc:
        return exc
    pytest.fail(f"decoded {hello!r} from {data[:40]!r}")


def test_oversize_message() -> None:
    message = pack({"t": 7, "ref": 1, "data": b"x" * 100})
    assert refuse(message, m.Limits(max_message=len(message) - 1)).code == ErrorCode.TOO_LARGE
    assert m.decode(message, m.Limits(max_message=len(message))) == m.Awareness(1, b"x" * 100)
    big = pack({"t": 7, "ref": 1, "data": b"x" * m.DEFAULT_LIMITS.max_message})
    assert refuse(big).code == ErrorCode.TOO_LARGE


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",  # never used
        b"\x82\xa1t\x09",  # truncated map
        b"\x82\xa1t\x09\xa2id",
        b"\x82\xa1t\x09\xa2i",
        pack({"t": 9, "id": 1}) + b"\x00",  # trailing bytes
        pack({"t": 9, "id": 1}) * 2,
        b"\x82\xa1t\x09\xa2\xff\xfe\x01",  # key that is not UTF-8
        b"\x83\xa1t\x03\xa3ref\x01\xa3doc\xa2\xc3\x28",  # value that is not UTF-8
        b"\x82\xa1t\x09\xa2id\xcb\x3f\xf0\x00\x00\x00\x00\x00\x00",  # float64 1.0
        b"\x82\xa1t\x09\xa2id\xca\x3f\x80\x00\x00",  # float32 1.0
        b"\x82\xa1t\x09\xa2id\xd3\xff\xff\xff\xff\xff\xff\xff\xff",  # int64 -1
    ],
    ids=[
        "empty",
        "reserved-byte",
        "truncated-map",
        "truncated-value",
        "truncated-key",
        "trailing-byte",
        "two-messages",
        "key-not-utf8",
        "value-not-utf8",
        "float64",
        "float32",
        "int64-negative",
    ],
)
def test_malformed(data: bytes) -> None:
    assert refuse(data).code == ErrorCode.MALFORMED


@given(any_message, st.data())
def test_truncated_encodings_are_refused(message: m.Message, data: st.DataObject) -> None:
    encoded = m.encode(message)
    cut = data.draw(st.integers(0, len(encoded) - 1), label="cut")
    refuse(encoded[:cut])


@given(any_message, st.binary(min_size=1, max_size=8))
def test_trailing_bytes_are_refused(message: m.Message, extra: bytes) -> None:
    refuse(m.encode(message) + extra)


@pytest.mark.parametrize("data", [b"\xc1\xc1", b"\x92", b"\xa5ab", b"\xc1" * 500, b"\x80\x80"])
def test_what_is_not_msgpack_is_said_in_a_close_reason(data: bytes) -> None:
    refused = refuse(data)
    assert refused.code == ErrorCode.MALFORMED
    message = refused.message
    assert message.startswith("not a msgpack message: ") and len(message.encode()) <= 123
    why = message.removeprefix("not a msgpack message: ")
    assert why and not why.startswith("("), message
    assert f"{len(data)} byte" in why and f": {data[:2].hex(' ')}" in why
