"""What a text document's update may hold, read without applying it: plain text in its one
root, from clients with ids Yjs can encode; anything else is refused with 4010."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Array, Doc, Map, Text

from protocol.errors import ErrorCode, ProtocolError
from protocol.lib0 import write_var_uint
from protocol.text_update import MAX_CLIENT, MAX_CLOCK, read_text_update, text_update_clients
from protocol.yjs import decode_state_vector

ROOT = "source"


def edits(client: int = 7) -> tuple[Doc[Any], list[bytes]]:
    """A document typed into, deleted from and typed into again, one update per edit."""
    doc: Doc[Any] = Doc(client_id=client)
    text = doc.get(ROOT, type=Text)
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    rng = random.Random(client)
    for i in range(200):
        now = str(text)  # (pycrdt's indices are UTF-8 offsets: kept on character bounds)
        if len(now) > 5 and rng.random() < 0.3:
            start = rng.randrange(len(now) - 3)
            del text[_at(now, start) : _at(now, start + rng.randint(1, 3))]
        else:
            at = _at(now, rng.randint(0, len(now)))
            text.insert(at, rng.choice(["a", "é", "🙂", f"line {i}\n"]))
    return doc, updates


def _at(text: str, index: int) -> int:
    """The UTF-8 offset of code point ``index`` of ``text``."""
    return len(text[:index].encode())


def refused(update: bytes) -> str:
    with pytest.raises(ProtocolError) as info:
        text_update_clients(update, ROOT)
    assert info.value.code == ErrorCode.INVALID_UPDATE
    return info.value.message


@pytest.mark.parametrize("extra", [b"\x00", b"JUNK", bytes(64)])
def test_bytes_after_the_delete_set_are_refused(extra: bytes) -> None:
    doc, updates = edits()
    for update in [b"\x00\x00", updates[-1], doc.get_update()]:
        read_text_update(update, ROOT)  # read to its very end
        assert "after its delete set" in refused(update + extra)


def test_text_edits_are_accepted_with_their_clients() -> None:
    doc, updates = edits()
    for update in updates:
        assert text_update_clients(update, ROOT) <= {7}
    other: Doc[Any] = Doc(client_id=8)
    other.apply_update(doc.get_update())
    other.get(ROOT, type=Text).insert(0, "more")
    whole = other.get_update()  # a sync step 2: every struct, both clients, the deletions
    assert text_update_clients(whole, ROOT) == {7, 8}
    assert text_update_clients(b"\x00\x00", ROOT) == frozenset()  # the empty update


def test_the_largest_client_id_yjs_encodes_is_accepted() -> None:
    doc: Doc[Any] = Doc(client_id=MAX_CLIENT)
    doc.get(ROOT, type=Text).insert(0, "top")
    assert text_update_clients(doc.get_update(), ROOT) == {MAX_CLIENT}


@pytest.mark.parametrize("client", [2**53, 2**60, 2**64 - 1])
def test_client_ids_over_53_bits_are_refused(client: int) -> None:
    doc: Doc[Any] = Doc(client_id=5)
    doc.get(ROOT, type=Text).insert(0, "big")
    update = doc.get_update()
    assert update[:3] == b"\x01\x01\x05"  # one client, one struct, client 5
    forged = bytearray(b"\x01\x01")
    write_var_uint(forged, client)
    assert "over 2^53" in refused(bytes(forged) + update[3:])
    deletion = bytearray(b"\x00\x01")  # no structs; a deleted range of that client
    write_var_uint(deletion, client)
    assert "over 2^53" in refused(bytes(deletion) + b"\x01\x00\x01")


def test_client_ids_read_again_are_each_their_own() -> None:
    """Ids read before are looked up by their bytes: ids that share all but a byte of their
    encoding, read in turn and again, are each read as itself."""
    ids = [2**40 + 1, 2**40 + 2, 2**40 + 1 + (1 << 35), 300, 2**32 - 1]
    for _ in range(2):
        for client in ids:
            update = var(1, 1, client, 0) + b"\x04" + var(1, len(ROOT)) + ROOT.encode()
            update += var(2) + b"ab" + var(1, client + 1, 1, 0, 1)
            shape = read_text_update(update, ROOT)
            assert shape.clients == {client} and shape.starts == {client: 0}
            assert shape.deleted == {client + 1: 1}


def var(*numbers: int) -> bytes:
    out = bytearray()
    for number in numbers:
        write_var_uint(out, number)
    return bytes(out)


def item(client: int, clock: int, text: bytes) -> bytes:
    """One section of one string struct placed at the start of the root text."""
    string = b"\x04" + var(1) + var(len(ROOT)) + ROOT.encode() + var(len(text)) + text
    return var(1, 1, client, clock) + string


NO_DELETIONS = b"\x00"


def test_a_struct_ending_at_the_largest_clock_is_accepted() -> None:
    assert text_update_clients(item(500, MAX_CLOCK - 5, b"abcde") + NO_DELETIONS, ROOT) == {500}
    deletion = b"\x00" + var(1, 502, 1, MAX_CLOCK - 3, 3)
    assert text_update_clients(deletion, ROOT) == frozenset()


@pytest.mark.parametrize(
    "update",
    [
        item(500, 2**32, b"x") + NO_DELETIONS,  # read as clock 0 by yrs
        item(500, 2**62, b"x") + NO_DELETIONS,
        item(500, MAX_CLOCK - 4, b"abcde") + NO_DELETIONS,  # its end wraps
        item(500, MAX_CLOCK - 1, "😀".encode()) + NO_DELETIONS,  # two UTF-16 units
        var(1, 1, 501, 1) + b"\x0a" + var(MAX_CLOCK) + NO_DELETIONS,  # a skipped range
        var(1, 1, 502, 0) + b"\x81" + var(7, 2**32) + var(3) + NO_DELETIONS,  # its origin
        b"\x00" + var(1, 502, 1, 2**32, 1),  # a deleted range at a clock past 32 bits
        b"\x00" + var(1, 502, 1, MAX_CLOCK, 1),  # a deleted range that ends past it
    ],
)
def test_clocks_past_32_bits_are_refused(update: bytes) -> None:
    assert "over 2^32 - 1" in refused(update)


def test_a_collected_range_is_refused() -> None:
    """Yjs writes a GC struct only for the content of a deleted nested type; a text placed
    next to one is dropped by stock Yjs and kept by yrs, so the copies would differ."""
    assert "collected range" in refused(var(1, 1, 501, 0) + b"\x00" + var(3) + NO_DELETIONS)
    after = var(1, 2, 501, 0) + b"\x00" + var(3) + item(501, 3, b"y")[5:] + NO_DELETIONS
    assert "collected range" in refused(after)


def build(change: Any) -> bytes:
    doc: Doc[Any] = Doc(client_id=9)
    doc.get(ROOT, type=Text).insert(0, "text")
    before = doc.get_state()
    with doc.transaction():
        change(doc)
    return doc.get_update(before)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda doc: doc.get(ROOT, type=Text).insert_embed(0, {"image": "x.png"}), "embed"),
        (lambda doc: doc.get(ROOT, type=Text).format(0, 2, {"bold": True}), "formatting"),
        (lambda doc: doc.get(ROOT, type=Text).insert(0, "b", {"bold": True}), "formatting"),
        (lambda doc: doc.get("other", type=Text).insert(0, "x"), "root b'other'"),
        (lambda doc: doc.get("meta", type=Map).update({"k": 1}), "root b'meta'"),
        (lambda doc: doc.get("list", type=Array).append(1), "root b'list'"),
    ],
)
def test_anything_but_text_in_its_root_is_refused(change: Any, why: str) -> None:
    assert why in refused(build(change))


def test_a_nested_type_is_refused() -> None:
    doc: Doc[Any] = Doc(client_id=9)
    meta = doc.get("meta", type=Map)
    meta["inner"] = Text()
    assert "root b'meta'" in refused(doc.get_update())
    before = doc.get_state()
    meta["inner"].insert(0, "x")  # its first item names its parent by id
    assert "nested type" in refused(doc.get_update(before))


def test_every_truncation_is_refused_or_whole() -> None:
    _doc, updates = edits()
    whole = b"".join(updates[:1])
    for cut in range(len(whole)):
        try:
            text_update_clients(whole[:cut], ROOT)
        except ProtocolError as exc:
            assert exc.code == ErrorCode.INVALID_UPDATE


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_give_clients_or_invalid_update(data: bytes) -> None:
    try:
        clients = text_update_clients(data, ROOT)
    except ProtocolError as exc:
        assert exc.code == ErrorCode.INVALID_UPDATE
    else:
        assert all(0 <= client <= MAX_CLIENT for client in clients)


@settings(max_examples=500, deadline=None)
@given(st.integers(0, 10_000), st.integers(0, 255))
def test_mutated_updates_give_clients_or_invalid_update(where: int, byte: int) -> None:
    doc, _updates = edits(11)
    update = bytearray(doc.get_update())
    update[where % len(update)] = byte
    try:
        text_update_clients(bytes(update), ROOT)
    except ProtocolError as exc:
        assert exc.code == ErrorCode.INVALID_UPDATE


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=4))
def test_a_sections_end_is_its_clients_clock_after_it(texts: list[str]) -> None:
    """A string takes as many clocks as it has UTF-16 units (non-BMP characters two, in
    Yjs and in the CRDT core alike), not bytes: the end read is the clock the core reaches."""
    doc: Doc[Any] = Doc(client_id=77)
    source = doc.get("source", type=Text)
    for text in texts:
        now = str(source)
        source.insert(_at(now, len(now) // 2), text)
    shape = read_text_update(doc.get_update(), "source")
    state = decode_state_vector(doc.get_state())
    assert shape.starts == {77: 0} and shape.ends == {77: state[77]}


def test_what_an_update_needs_of_a_document_is_read() -> None:
    """A skip before more structs, and origins in other clients' clocks, are what a document
    must hold to integrate an update whole; a skip at a section's end reaches no clock."""
    update = bytearray()
    for number in (1, 4, 9, 0):
        write_var_uint(update, number)
    update += b"\x04\x01\x06source\x01a"  # "a" at clock 0, in the root
    update += b"\x0a\x03"  # clocks 1 to 3 skipped
    update += b"\x84\x08\x05\x01b"  # "b" at clock 4, after clock 5 of client 8
    update += b"\x0a\x07\x00"  # a skip at the end, then no deletions
    shape = read_text_update(bytes(update), ROOT)
    assert shape.resumes == {9: 4} and shape.origins == [(8, 5)]
    assert shape.starts == {9: 0} and shape.ends == {9: 5}


def test_an_item_placed_by_its_own_clock_or_a_later_one_is_refused() -> None:
    for origin in (1, 2, 5):  # the item is at clock 1
        update = bytearray()
        for number in (1, 2, 9, 0):
            write_var_uint(update, number)
        update += b"\x04\x01\x06source\x01a"
        update += bytes([0x84, 9, origin]) + b"\x01b\x00"
        assert "placed by its own clock" in refused(bytes(update))
