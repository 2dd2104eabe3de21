"""Fuzz every decoder: arbitrary and mutated bytes give a valid message or a ProtocolError."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import messages as m
from protocol.errors import ErrorCode, ProtocolError
from protocol.yjs import (
    AuthDenied,
    AwarenessEntry,
    AwarenessMessage,
    QueryAwareness,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
    YjsLimits,
    decode_awareness,
    decode_message,
    encode_awareness,
    encode_message,
)

FAST = settings(max_examples=300, deadline=None)
# the slow runs: bounded by default, for a suite that stays fast; more with COLLAB_FUZZ_EXAMPLES
SLOW = settings(
    max_examples=int(os.environ.get("COLLAB_FUZZ_EXAMPLES", "2500")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# Small limits, so that fuzzed lengths also reach the TOO_LARGE paths.
YJS_LIMITS = YjsLimits(
    max_message=4096,
    max_update=1024,
    max_state_vector=64,
    max_awareness_entries=4,
    max_awareness_state=256,
    max_reason=32,
)
MSG_LIMITS = m.Limits(max_message=4096, max_str=64, max_bin=1024, max_fields=8)

# -- valid encodings to mutate -----------------------------------------------------------------

ints = st.integers(0, 2**53 - 1) | st.sampled_from([0, 1, 127, 128, 255, 256, 65535, 65536])
json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
awareness_entries = st.lists(
    st.builds(
        AwarenessEntry,
        ints,
        ints,
        st.none() | st.dictionaries(st.text(max_size=6), json_values, max_size=4),
    ),
    max_size=4,
)
yjs_encodings = st.one_of(
    st.builds(SyncStep1, st.binary(max_size=32)),
    st.builds(SyncStep2, st.binary(max_size=64)),
    st.builds(SyncUpdate, st.binary(max_size=64)),
    st.builds(AwarenessMessage, awareness_entries.map(encode_awareness)),
    st.builds(AuthDenied, st.text(max_size=8)),
    st.just(QueryAwareness()),
).map(encode_message)
awareness_encodings = awareness_entries.map(encode_awareness)
texts = st.text(max_size=16)
engine_encodings = st.one_of(
    st.builds(m.Hello, ints, st.none() | texts, st.none() | texts),
    st.builds(m.Welcome, ints, texts, texts),
    st.builds(m.Open, ints, texts),
    st.builds(m.Opened, ints, texts, st.booleans()),
    st.builds(m.Close, ints),
    st.builds(m.Sync, ints, st.sampled_from(m.SyncStep), st.binary(max_size=32)),
    st.builds(m.Awareness, ints, st.binary(max_size=32)),
    st.builds(m.Error, st.sampled_from(ErrorCode), texts, st.none() | ints),
    st.builds(m.Ping, ints),
    st.builds(m.Pong, ints),
    st.builds(m.Call, ints, texts, st.dictionaries(texts, ints | texts, max_size=3)),
    st.builds(m.Result, ints, st.none() | ints | st.lists(texts, max_size=3)),
    st.builds(m.Event, texts, st.dictionaries(texts, ints, max_size=3)),
).map(m.encode)

# -- what every decoder must do ----------------------------------------------------------------

YJS_TYPES = (SyncStep1, SyncStep2, SyncUpdate, AwarenessMessage, AuthDenied, QueryAwareness)
ENGINE_TYPES = (
    m.Hello,
    m.Welcome,
    m.Open,
    m.Opened,
    m.Close,
    m.Sync,
    m.Awareness,
    m.Error,
    m.Ping,
    m.Pong,
    m.Call,
    m.Result,
    m.Event,
)


def check_yjs(data: bytes) -> None:
    try:
        message = decode_message(data, YJS_LIMITS)
    except ProtocolError as exc:
        assert exc.code in (ErrorCode.MALFORMED, ErrorCode.TOO_LARGE)
        return
    assert isinstance(message, YJS_TYPES)
    assert decode_message(encode_message(message), YJS_LIMITS) == message


def check_awareness(data: bytes) -> None:
    try:
        entries = decode_awareness(data, YJS_LIMITS)
    except ProtocolError as exc:
        assert exc.code in (ErrorCode.MALFORMED, ErrorCode.TOO_LARGE)
        return
    assert len(entries) <= YJS_LIMITS.max_awareness_entries
    for entry in entries:
        assert isinstance(entry.client_id, int)
        assert isinstance(entry.clock, int)
        assert entry.state is None or isinstance(entry.state, dict)
    # What we accept, we can send on: it re-encodes as UTF-8 JSON and decodes the same.
    assert decode_awareness(encode_awareness(entries)) == entries


def check_engine(data: bytes) -> None:
    try:
        message = m.decode(data, MSG_LIMITS)
    except ProtocolError as exc:
        assert exc.code in (ErrorCode.MALFORMED, ErrorCode.TOO_LARGE)
        return
    assert isinstance(message, ENGINE_TYPES)
    assert m.decode(m.encode(message), MSG_LIMITS) == message


Target = tuple[Callable[[bytes], None], st.SearchStrategy[bytes], st.SearchStrategy[bytes]]

TARGETS: dict[str, Target] = {
    # (check, valid encodings, prefixes that get past the first byte or two)
    "yjs": (
        check_yjs,
        yjs_encodings,
        st.sampled_from(
            [b"", b"\x00\x00", b"\x00\x01", b"\x00\x02", b"\x01", b"\x02\x00", b"\x03"]
        ),
    ),
    "awareness": (
        check_awareness,
        awareness_encodings,
        st.sampled_from([b"", b"\x01", b"\x02", b"\x01\x01\x01"]),
    ),
    "engine": (
        check_engine,
        engine_encodings,
        st.sampled_from([b"", b"\x81", b"\x82\xa1t\x09", b"\x83\xa1t\x06", b"\x83\xa1t\x03"]),
    ),
}

# -- inputs ------------------------------------------------------------------------------------


@st.composite
def arbitrary(draw: st.DrawFn, prefixes: st.SearchStrategy[bytes]) -> bytes:
    return draw(prefixes) + draw(st.binary(max_size=128))


@st.composite
def mutated(draw: st.DrawFn, valid: st.SearchStrategy[bytes]) -> bytes:
    data = bytearray(draw(valid))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["truncate", "flip", "set", "insert", "delete", "duplicate"]))
        at = draw(st.integers(0, len(data)))
        if op == "truncate":
            del data[at:]
        elif op == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and at < len(data):
            data[at] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xFF, 0xC1, 0xDD, 0xDF, 0xC6]))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 4))]
        elif op == "duplicate":
            data[at:at] = data[at : at + draw(st.integers(1, 8))]
    return bytes(data)


def run_arbitrary(target: str, limit: settings) -> None:
    check, _, prefixes = TARGETS[target]
    limit(given(arbitrary(prefixes))(check))()


def run_mutated(target: str, limit: settings) -> None:
    check, valid, _ = TARGETS[target]
    limit(given(mutated(valid))(check))()


# -- tests -------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", list(TARGETS))
def test_arbitrary_bytes(target: str) -> None:
    run_arbitrary(target, FAST)


@pytest.mark.parametrize("target", list(TARGETS))
def test_mutated_encodings(target: str) -> None:
    run_mutated(target, FAST)


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("target", list(TARGETS))
def test_arbitrary_bytes_many(target: str) -> None:
    run_arbitrary(target, SLOW)


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("target", list(TARGETS))
def test_mutated_encodings_many(target: str) -> None:
    run_mutated(target, SLOW)


def test_mutations_reach_valid_and_invalid_results() -> None:
    """The fuzz inputs are not all refused at the first byte: many still decode."""
    seen = {"ok": 0, "refused": 0}

    @settings(max_examples=1000, deadline=None, database=None, derandomize=True)
    @given(mutated(engine_encodings))
    def probe(data: bytes) -> None:
        try:
            m.decode(data, MSG_LIMITS)
        except ProtocolError:
            seen["refused"] += 1
        else:
            seen["ok"] += 1

    probe()
    assert seen["ok"] > 0, seen
    assert seen["refused"] > 0


def test_packed_random_objects_never_escape() -> None:
    """Any msgpack object at all, not just our messages, decodes or raises ProtocolError."""
    leaves = (
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**64 - 1)
        | st.floats()
        | st.text(max_size=70)
        | st.binary(max_size=8)
    )
    objects = st.recursive(
        leaves,
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(st.text(max_size=8) | st.binary(max_size=2), inner, max_size=4)
        ),
        max_leaves=8,
    )
    keys = st.sampled_from(["t", "id", "ref", "doc", "data", "step", "code", "version", "x"])
    maps = st.dictionaries(keys, objects | st.integers(0, 12), max_size=5)

    @FAST
    @given(objects | maps)
    def check(obj: Any) -> None:
        check_engine(msgpack.packb(obj, use_bin_type=True))

    check()
