"""y-protocols messages: byte-compatibility with the JavaScript libraries, round trips, limits."""

from __future__ import annotations

import json
import shutil
import subprocess
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pycrdt import Doc, Text

from protocol.errors import ErrorCode, ProtocolError
from protocol.lib0 import Reader, write_var_bytes, write_var_string, write_var_uint
from protocol.yjs import (
    AuthDenied,
    AwarenessEntry,
    AwarenessMessage,
    QueryAwareness,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
    YjsLimits,
    YjsMessage,
    decode_awareness,
    decode_message,
    decode_state_vector,
    encode_awareness,
    encode_message,
)

JS_DIR = Path(__file__).resolve().parents[1] / "js"

# -- helpers -----------------------------------------------------------------------------------


def varuint(value: int) -> bytes:
    out = bytearray()
    write_var_uint(out, value)
    return bytes(out)


def varstring(text: str | bytes) -> bytes:
    raw = text.encode("utf-8") if isinstance(text, str) else text
    return varuint(len(raw)) + raw


def awareness_payload(*entries: tuple[int, int, str | bytes]) -> bytes:
    """An awareness update built by hand, so that the state can be any text or bytes."""
    out = varuint(len(entries))
    for client_id, clock, state in entries:
        out += varuint(client_id) + varuint(clock) + varstring(state)
    return out


def expect_error(code: ErrorCode, decode: Callable[[], object]) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode()
    assert info.value.code == code, info.value
    return info.value


def run_node(script: str, stdin: str = "") -> Any:
    """Run an ES module in ``tests/js`` and parse the JSON it prints."""
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    for package in ("yjs", "y-protocols", "lib0"):
        if not (JS_DIR / "node_modules" / package).is_dir():
            pytest.skip(f"npm package {package} is not installed under tests/js")
    proc = subprocess.run(
        ["node", "--input-type=module", "-e", script],
        cwd=JS_DIR,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


# -- reference bytes from the JavaScript libraries ---------------------------------------------

JS_PRELUDE = """
import * as Y from 'yjs'
import * as sync from 'y-protocols/sync'
import * as awareness from 'y-protocols/awareness'
import * as auth from 'y-protocols/auth'
import * as encoding from 'lib0/encoding'
import * as decoding from 'lib0/decoding'
const hex = (u8) => Buffer.from(u8).toString('hex')
const unhex = (s) => new Uint8Array(Buffer.from(s, 'hex'))
const message = (write) => {
  const encoder = encoding.createEncoder()
  write(encoder)
  return hex(encoding.toUint8Array(encoder))
}
"""

JS_VECTORS = (
    JS_PRELUDE
    + r"""
const out = {}
const doc = new Y.Doc()
doc.clientID = 1234567
const text = doc.getText('source')
text.insert(0, 'héllo wörld, 世界, 🎉\n')
doc.getMap('meta').set('k', 'v')
const other = new Y.Doc()
other.clientID = 4294967295
Y.applyUpdate(other, Y.encodeStateAsUpdate(doc))
other.getText('source').insert(0, '> ')
Y.applyUpdate(doc, Y.encodeStateAsUpdate(other))

out.state_vector = hex(Y.encodeStateVector(doc))
out.step1 = message((e) => { encoding.writeVarUint(e, 0); sync.writeSyncStep1(e, doc) })
const emptySv = Y.encodeStateVector(new Y.Doc())
out.full_update = hex(Y.encodeStateAsUpdate(doc, emptySv))
out.step2 = message((e) => { encoding.writeVarUint(e, 0); sync.writeSyncStep2(e, doc, emptySv) })
out.text = text.toString()

let captured = null
doc.on('update', (update) => { captured = update })
text.insert(2, 'ü')
out.incremental = hex(captured)
out.update = message((e) => { encoding.writeVarUint(e, 0); sync.writeUpdate(e, captured) })
out.text_after = text.toString()

const local = new awareness.Awareness(doc)
local.setLocalState({
  user: { name: 'Zoë 🎉 世界', color: '#30bced' },
  cursor: { anchor: 1, head: 4 },
  lone: 'a\ud800b',
  quote: '"\\\n\t\u0001',
  flags: [true, false, null, -7, 0],
})
const remoteDoc = new Y.Doc()
remoteDoc.clientID = 42
const remote = new awareness.Awareness(remoteDoc)
remote.setLocalState({ user: { name: 'bob' } })
awareness.applyAwarenessUpdate(local, awareness.encodeAwarenessUpdate(remote, [42]), 'test')
const payload = awareness.encodeAwarenessUpdate(local, [1234567, 42])
out.awareness_payload = hex(payload)
out.awareness = message((e) => {
  encoding.writeVarUint(e, 1)
  encoding.writeVarUint8Array(e, payload)
})
out.awareness_states = [1234567, 42].map(
  (id) => [id, local.meta.get(id).clock, local.states.get(id)]
)
remote.setLocalState(null)
out.awareness_removed = hex(awareness.encodeAwarenessUpdate(remote, [42]))
local.destroy()
remote.destroy()

out.auth_reason = 'read-only: écriture refusée'
out.auth = message((e) => {
  encoding.writeVarUint(e, 2)
  auth.writePermissionDenied(e, out.auth_reason)
})
out.query = message((e) => encoding.writeVarUint(e, 3))

out.varuints = [0, 1, 127, 128, 300, 16383, 16384, 2 ** 31, 2 ** 32 - 1, 2 ** 53 - 1].map(
  (n) => [n, message((e) => encoding.writeVarUint(e, n))]
)
out.varstrings = ['', 'a', 'héllo', '世界🎉', 'x'.repeat(200)].map(
  (s) => [s, message((e) => encoding.writeVarString(e, s))]
)
console.log(JSON.stringify(out))
process.exit(0)
"""
)

JS_READER = (
    JS_PRELUDE
    + r"""
import { readFileSync } from 'fs'
const inputs = JSON.parse(readFileSync(0, 'utf8'))
const doc = new Y.Doc()
const aw = new awareness.Awareness(new Y.Doc())
const out = []
for (const h of inputs) {
  const decoder = decoding.createDecoder(unhex(h))
  const kind = decoding.readVarUint(decoder)
  if (kind === 0) {
    const reply = encoding.createEncoder()
    const step = sync.readSyncMessage(decoder, reply, doc, 'py')
    out.push({ kind, step, reply: hex(encoding.toUint8Array(reply)) })
  } else if (kind === 1) {
    const payload = decoding.readVarUint8Array(decoder)
    awareness.applyAwarenessUpdate(aw, payload, 'py')
    const clocks = [...aw.meta.entries()].map(([id, meta]) => [id, meta.clock])
    out.push({ kind, states: [...aw.states.entries()], clocks })
  } else if (kind === 2) {
    let reason = null
    auth.readAuthMessage(decoder, doc, (_y, r) => { reason = r })
    out.push({ kind, reason })
  } else {
    out.push({ kind })
  }
  if (decoding.hasContent(decoder)) throw new Error('trailing bytes in ' + h)
}
aw.destroy()
console.log(JSON.stringify({ out, text: doc.getText('source').toString() }))
process.exit(0)
"""
)


@pytest.fixture(scope="module")
def js() -> dict[str, Any]:
    vectors: dict[str, Any] = run_node(JS_VECTORS)
    return vectors


def b(hex_text: str) -> bytes:
    return bytes.fromhex(hex_text)


@pytest.mark.js
class TestMatchesJavaScript:
    def test_sync_step1(self, js: dict[str, Any]) -> None:
        message = SyncStep1(b(js["state_vector"]))
        assert decode_message(b(js["step1"])) == message
        assert encode_message(message) == b(js["step1"])

    def test_sync_step2(self, js: dict[str, Any]) -> None:
        message = SyncStep2(b(js["full_update"]))
        assert decode_message(b(js["step2"])) == message
        assert encode_message(message) == b(js["step2"])

    def test_sync_update(self, js: dict[str, Any]) -> None:
        message = SyncUpdate(b(js["incremental"]))
        assert decode_message(b(js["update"])) == message
        assert encode_message(message) == b(js["update"])

    def test_pycrdt_reads_the_js_updates(self, js: dict[str, Any]) -> None:
        step2 = decode_message(b(js["step2"]))
        update = decode_message(b(js["update"]))
        assert isinstance(step2, SyncStep2)
        assert isinstance(update, SyncUpdate)
        doc: Doc[Any] = Doc()
        doc.apply_update(step2.update)
        assert str(doc.get("source", type=Text)) == js["text"]
        doc.apply_update(update.update)
        assert str(doc.get("source", type=Text)) == js["text_after"]

    def test_awareness(self, js: dict[str, Any]) -> None:
        payload = b(js["awareness_payload"])
        assert decode_message(b(js["awareness"])) == AwarenessMessage(payload)
        assert encode_message(AwarenessMessage(payload)) == b(js["awareness"])
        entries = decode_awareness(payload)
        assert entries == [
            AwarenessEntry(cid, clock, state) for cid, clock, state in js["awareness_states"]
        ]
        assert entries[0].state is not None
        assert entries[0].state["user"]["name"] == "Zoë 🎉 世界"
        assert entries[0].state["lone"] == "a\ud800b"
        # Our encoder writes the very bytes JSON.stringify wrote (raw UTF-8, escaped surrogates).
        assert encode_awareness(entries) == payload

    def test_awareness_removal(self, js: dict[str, Any]) -> None:
        payload = b(js["awareness_removed"])
        entries = decode_awareness(payload)
        assert entries == [AwarenessEntry(42, 2, None)]
        assert encode_awareness(entries) == payload

    def test_auth_permission_denied(self, js: dict[str, Any]) -> None:
        message = AuthDenied(js["auth_reason"])
        assert decode_message(b(js["auth"])) == message
        assert encode_message(message) == b(js["auth"])

    def test_query_awareness(self, js: dict[str, Any]) -> None:
        assert decode_message(b(js["query"])) == QueryAwareness()
        assert encode_message(QueryAwareness()) == b(js["query"])

    def test_lib0_varuint_and_varstring(self, js: dict[str, Any]) -> None:
        for value, encoded in js["varuints"]:
            assert varuint(value) == b(encoded)
            reader = Reader(b(encoded))
            assert reader.read_var_uint() == value
            assert reader.at_end()
        for text, encoded in js["varstrings"]:
            out = bytearray()
            write_var_string(out, text)
            assert bytes(out) == b(encoded)
            assert Reader(b(encoded)).read_var_string(1024) == text

    def test_js_reads_our_messages(self) -> None:
        doc: Doc[Any] = Doc(client_id=777)
        text = doc.get("source", type=Text)
        text += "from python: ü 世界 🎉"
        state = {"user": {"name": "Zoë 🎉", "color": "#ff0000"}, "lone": "\udfff", "n": [1, None]}
        messages: list[YjsMessage] = [
            SyncStep1(Doc().get_state()),
            SyncStep2(doc.get_update()),
            SyncUpdate(doc.get_update(doc.get_state())),
            AwarenessMessage(encode_awareness([AwarenessEntry(99, 3, state)])),
            AuthDenied("no entry: ü"),
            QueryAwareness(),
        ]
        result = run_node(JS_READER, json.dumps([encode_message(m).hex() for m in messages]))
        out = result["out"]
        assert [entry["kind"] for entry in out] == [0, 0, 0, 1, 2, 3]
        assert [entry["step"] for entry in out[:3]] == [0, 1, 2]
        # readSyncMessage answers the step 1 with a step 2 (without the outer message type).
        assert isinstance(decode_message(b"\x00" + b(out[0]["reply"])), SyncStep2)
        assert result["text"] == "from python: ü 世界 🎉"
        assert dict(out[3]["states"])[99] == state
        assert dict(out[3]["clocks"])[99] == 3
        assert out[4]["reason"] == "no entry: ü"


# -- round trips -------------------------------------------------------------------------------

yjs_messages: st.SearchStrategy[YjsMessage] = st.one_of(
    st.builds(SyncStep1, st.binary(max_size=128)),
    st.builds(SyncStep2, st.binary(max_size=512)),
    st.builds(SyncUpdate, st.binary(max_size=512)),
    st.builds(AwarenessMessage, st.binary(max_size=512)),
    st.builds(AuthDenied, st.text(max_size=200)),
    st.just(QueryAwareness()),
)

json_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
awareness_states = st.none() | st.dictionaries(st.text(max_size=10), json_values, max_size=5)
awareness_entries = st.lists(
    st.builds(
        AwarenessEntry,
        st.integers(0, 2**53 - 1),
        st.integers(0, 2**53 - 1),
        awareness_states,
    ),
    max_size=8,
)


@given(yjs_messages)
def test_message_round_trip(message: YjsMessage) -> None:
    assert decode_message(encode_message(message)) == message


@given(awareness_entries)
def test_awareness_round_trip(entries: list[AwarenessEntry]) -> None:
    payload = encode_awareness(entries)
    assert decode_awareness(payload) == entries
    assert decode_message(encode_message(AwarenessMessage(payload))) == AwarenessMessage(payload)


@pytest.mark.parametrize("text", ["\ud800", "a\udfffb", "\udbff🎉\ud800"])
def test_awareness_lone_surrogates_round_trip(text: str) -> None:
    entries = [AwarenessEntry(1, 1, {text: text})]
    payload = encode_awareness(entries)
    payload.decode("utf-8")  # well-formed UTF-8, as JSON.stringify writes it
    assert decode_awareness(payload) == entries


def test_awareness_limits_at_the_boundary() -> None:
    limits = YjsLimits(max_awareness_entries=64, max_awareness_state=16)
    state = '{"a":"' + "x" * 8 + '"}'
    assert len(state) == 16
    entries = decode_awareness(awareness_payload(*[(i, 0, state) for i in range(64)]), limits)
    assert len(entries) == 64


# -- malformed input ---------------------------------------------------------------------------

HUNDRED_MB = 100 * 1024 * 1024


@pytest.mark.parametrize(
    "header",
    [b"\x00\x00", b"\x00\x01", b"\x00\x02", b"\x01", b"\x02\x00"],
    ids=["step1", "step2", "update", "awareness", "auth"],
)
def test_declared_length_over_limit_is_refused_without_allocating(header: bytes) -> None:
    data = header + varuint(HUNDRED_MB) + b"hello"
    tracemalloc.start()
    try:
        expect_error(ErrorCode.TOO_LARGE, lambda: decode_message(data))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024


def test_declared_awareness_entry_count_is_refused_without_allocating() -> None:
    tracemalloc.start()
    try:
        expect_error(ErrorCode.TOO_LARGE, lambda: decode_awareness(varuint(2**50) + b"\x01"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024


def test_present_fields_over_their_limits() -> None:
    limits = YjsLimits(max_state_vector=8, max_update=16, max_reason=4)
    expect_error(ErrorCode.TOO_LARGE, lambda: decode_state_vector(varuint(4) + b"\x01" * 8, limits))
    # a sync step 1 is bounded by the frame: how long a state vector may be depends on the
    # document (whoever answers it bounds it by that)
    long_state = b"x" * 1000
    assert decode_message(b"\x00\x00" + varstring(long_state), limits) == SyncStep1(long_state)
    expect_error(
        ErrorCode.TOO_LARGE,
        lambda: decode_message(b"\x00\x00" + varstring(b"x" * 32), YjsLimits(max_message=16)),
    )
    for header in (b"\x00\x01", b"\x00\x02"):
        with pytest.raises(ProtocolError) as info:
            decode_message(header + varstring(b"u" * 17), limits)
        assert info.value.code == ErrorCode.TOO_LARGE
    expect_error(
        ErrorCode.TOO_LARGE, lambda: decode_message(b"\x02\x00" + varstring("éé!"), limits)
    )
    assert decode_message(b"\x02\x00" + varstring("éé"), limits) == AuthDenied("éé")


def test_whole_message_over_limit() -> None:
    limits = YjsLimits(max_message=16)
    ok = encode_message(SyncUpdate(b"x" * 13))
    assert len(ok) == 16
    assert decode_message(ok, limits) == SyncUpdate(b"x" * 13)
    expect_error(
        ErrorCode.TOO_LARGE, lambda: decode_message(encode_message(SyncUpdate(b"x" * 14)), limits)
    )


def test_awareness_too_many_entries() -> None:
    whole_table = awareness_payload(*[(i, 0, "{}") for i in range(256)])  # a room's, echoed
    assert len(decode_awareness(whole_table)) == 256
    payload = awareness_payload(*[(i, 0, "{}") for i in range(257)])
    expect_error(ErrorCode.TOO_LARGE, lambda: decode_awareness(payload))
    small = YjsLimits(max_awareness_entries=2)
    expect_error(
        ErrorCode.TOO_LARGE,
        lambda: decode_awareness(awareness_payload(*[(i, 0, "{}") for i in range(3)]), small),
    )


def test_awareness_state_over_limit_is_left_out_and_the_rest_taken() -> None:
    state = '{"a":"' + "x" * (16 * 1024) + '"}'
    payload = awareness_payload((1, 1, state), (2, 5, '{"b":1}'), (3, 1, b"\xff" * 20_000))
    oversize: list[tuple[int, int]] = []
    assert decode_awareness(payload, oversize=oversize) == [AwarenessEntry(2, 5, {"b": 1})]
    assert oversize == [(1, len(state)), (3, 20_000)]  # not read: not even as UTF-8
    assert decode_awareness(payload) == [AwarenessEntry(2, 5, {"b": 1})]


@given(yjs_messages, st.data())
def test_truncated_messages_are_malformed(message: YjsMessage, data: st.DataObject) -> None:
    encoded = encode_message(message)
    cut = data.draw(st.integers(0, len(encoded) - 1), label="cut")
    expect_error(ErrorCode.MALFORMED, lambda: decode_message(encoded[:cut]))


@given(yjs_messages, st.binary(min_size=1, max_size=8))
def test_trailing_bytes_are_malformed(message: YjsMessage, extra: bytes) -> None:
    expect_error(ErrorCode.MALFORMED, lambda: decode_message(encode_message(message) + extra))


@given(awareness_entries.filter(bool), st.data())
def test_truncated_awareness_is_malformed(
    entries: list[AwarenessEntry], data: st.DataObject
) -> None:
    payload = encode_awareness(entries)
    cut = data.draw(st.integers(0, len(payload) - 1), label="cut")
    expect_error(ErrorCode.MALFORMED, lambda: decode_awareness(payload[:cut]))


@given(awareness_entries, st.binary(min_size=1, max_size=8))
def test_trailing_awareness_bytes_are_malformed(
    entries: list[AwarenessEntry], extra: bytes
) -> None:
    expect_error(ErrorCode.MALFORMED, lambda: decode_awareness(encode_awareness(entries) + extra))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x04",
        b"\x7f",
        b"\x00",
        b"\x00\x03\x00",
        b"\x02\x01\x00",
        b"\x80" * 9,
        b"\x00" + b"\xff" * 8,
        b"\x00\x02\x80",
    ],
    ids=[
        "empty",
        "unknown-type",
        "unknown-type-127",
        "sync-without-type",
        "unknown-sync-type",
        "unknown-auth-type",
        "varuint-too-long",
        "sync-type-too-long",
        "truncated-length",
    ],
)
def test_malformed_messages(data: bytes) -> None:
    expect_error(ErrorCode.MALFORMED, lambda: decode_message(data))


def test_auth_reason_must_be_utf8() -> None:
    expect_error(ErrorCode.MALFORMED, lambda: decode_message(b"\x02\x00" + varstring(b"\xff\xfe")))


@pytest.mark.parametrize(
    "state",
    [
        "[1, 2]",
        "1",
        '"text"',
        "true",
        "false",
        "",
        "{",
        "{'a': 1}",
        '{"a": NaN}',
        '{"a": Infinity}',
        '{"a": -Infinity}',
        '{"a": 1e400}',
        "NaN",
        '{"a": ' + "[" * 7000 + "]" * 7000 + "}",
        b"\xff\xfe",
        b'{"a": "\xc3"}',
        b'{"a": "\xed\xa0\x80"}',
    ],
    ids=lambda s: repr(s)[:24],
)
def test_awareness_states_that_are_not_json_objects(state: str | bytes) -> None:
    expect_error(ErrorCode.MALFORMED, lambda: decode_awareness(awareness_payload((1, 1, state))))


def test_awareness_null_and_object_states() -> None:
    payload = awareness_payload((1, 2, "null"), (3, 4, '{"cursor": {"anchor": 1}}'))
    assert decode_awareness(payload) == [
        AwarenessEntry(1, 2, None),
        AwarenessEntry(3, 4, {"cursor": {"anchor": 1}}),
    ]


def test_lib0_writer_refuses_negative() -> None:
    with pytest.raises(ValueError):
        varuint(-1)
    out = bytearray()
    write_var_bytes(out, b"abc")
    assert bytes(out) == b"\x03abc"


@pytest.mark.parametrize("client, clock", [(2**53, 1), (2**55 + 1, 1), (7, 2**53)])
def test_awareness_numbers_a_stock_client_misreads_are_refused(client: int, clock: int) -> None:
    payload = encode_awareness([AwarenessEntry(client, clock, {"user": {"name": "x"}})])
    with pytest.raises(ProtocolError) as refused:
        decode_awareness(payload)
    assert refused.value.code == ErrorCode.MALFORMED
