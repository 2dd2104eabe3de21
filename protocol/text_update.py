"""What a Yjs update (v1 encoding) may hold for a document that is one text: read, not applied.

A document here is a file: one root ``Y.Text`` holding plain text. An update that inserts
anything else, an embed, a formatting mark, a nested type, an entry of another root, is
valid Yjs but no valid edit of a file: offsets into the text would no longer match the
string the engine commits, and content outside the text would escape the document's size
cap. Client ids must also be ones every stock client can read back: Yjs numbers are at most
53 bits (a larger id is masked by some implementations and refused by others). Clocks must be
ones every implementation holds as they are: the Rust core (yrs, under pycrdt) keeps a clock in
32 bits, and would read a larger one modulo 2^32, as another struct than the one a stock
JavaScript client reads (the two would disagree on the text, and later edits could be taken for
ones the document has). No clock, nor the end of a struct or of a deleted range, may pass
``MAX_CLOCK``; a client would need billions of edits to get there.

:func:`text_update_clients` walks the update's structs and delete set without building
anything (the structure of ``Y.encodeStateAsUpdate``: per client, its structs; then the
deleted ranges) and returns the clients whose structs it carries; :func:`read_text_update`
returns what else the engine checks against the document (see :class:`UpdateShape`). An
update with two sections of one client is refused: no implementation writes one, and the
Rust core would take their clocks twice, giving a document whose own encoding reads back
as another text, or that it cannot read back at all.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass

from .errors import ErrorCode, ProtocolError
from .lib0 import MAX_SAFE_INTEGER

__all__ = [
    "MAX_CLIENT",
    "MAX_CLOCK",
    "UpdateShape",
    "deleted_ranges",
    "pairs_in",
    "read_text_update",
    "splits_a_pair",
    "text_update_clients",
]

MAX_CLIENT = MAX_SAFE_INTEGER
"""The largest client id Yjs can encode and decode."""

MAX_CLOCK = 2**32 - 1
"""The largest clock, and end of a clock range, that every Yjs implementation holds as it is
(yrs keeps clocks in 32 bits)."""

# the low five bits of a struct's info byte: what it is, or the kind of its item's content
_GC, _DELETED, _STRING, _SKIP = 0, 1, 4, 10
_KINDS = {
    2: "JSON content",
    3: "binary content",
    5: "an embed",
    6: "a formatting mark",
    7: "a nested type",
    8: "structured content",
    9: "a subdocument",
}
_HAS_ORIGIN, _HAS_RIGHT_ORIGIN, _HAS_PARENT_SUB = 0x80, 0x40, 0x20


def _refuse(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.INVALID_UPDATE, f"update rejected: {message}")


def _uint(data: bytes, pos: int) -> tuple[int, int]:
    """A lib0 varuint at ``pos``: (value, position after it)."""
    try:
        byte = data[pos]
        if byte < 0x80:  # one byte: most counts and lengths, and small clocks
            return byte, pos + 1
        value = byte & 0x7F
        for shift in _SHIFTS:
            pos += 1
            byte = data[pos]
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value, pos + 1
    except IndexError:
        raise _refuse("truncated") from None
    raise _refuse("a number too long")


_SHIFTS = range(7, 64, 7)  # of a varuint's bytes after its first (ten bytes at most)


def _client(data: bytes, pos: int) -> tuple[int, int]:
    """A client id at ``pos``: (id, position after it). The few ids of a document come back
    in every update, as varuints of five bytes or more: each is decoded once and looked up
    by its bytes after that."""
    known = _VARUINT.match(data, pos)
    if known is not None:
        raw = data[pos : known.end()]
        client = _CLIENT_IDS.get(raw)
        if client is not None:
            return client, known.end()
    client, pos = _uint(data, pos)
    if client > MAX_CLIENT:
        raise _refuse(f"client id {client} is over 2^53 - 1")
    if known is not None:
        if len(_CLIENT_IDS) >= _MAX_CLIENT_IDS:
            _CLIENT_IDS.clear()
        _CLIENT_IDS[raw] = client
    return client, pos


_VARUINT = re.compile(rb"[\x80-\xff]{0,9}[\x00-\x7f]")
"""The bytes of one varuint (at most ten)."""
_CLIENT_IDS: dict[bytes, int] = {}  # client ids by their varuint bytes (see _client)
_MAX_CLIENT_IDS = 4096


def _clock(data: bytes, pos: int) -> tuple[int, int]:
    clock, pos = _uint(data, pos)
    if clock > MAX_CLOCK:
        raise _refuse(f"a clock of {clock} is over 2^32 - 1")
    return clock, pos


def _within_clocks(start: int, length: int) -> int:
    """``start + length``: the end of a range of clocks, refused past ``MAX_CLOCK``."""
    end = start + length
    if end > MAX_CLOCK:
        raise _refuse(f"a clock of {end} is over 2^32 - 1")
    return end


def _skip_bytes(data: bytes, pos: int) -> tuple[bytes, int]:
    length, pos = _uint(data, pos)
    end = pos + length
    if end > len(data):
        raise _refuse("truncated")
    return data[pos:end], end


@dataclass(frozen=True, slots=True)
class UpdateShape:
    """What an update holds, as far as the engine checks it against a document.

    ``clients``: the clients whose structs it carries; ``starts`` and ``ends``: for each
    client with a section, the clock its structs start at and the one they reach (a string
    takes its length in UTF-16 units, as in Yjs);
    ``deleted``: for each client in its delete set, the end of its last deleted range.

    ``bounds``: where the update places text or ends a deletion, as ``(client, clock)``
    meaning right after that clock of that client (an item's origin; the clock before its
    right origin; the clocks before and at the end of each deleted range). ``pairs``: for
    each client whose strings hold characters past U+FFFF, the clock of each one's first
    UTF-16 unit (see :func:`splits_a_pair`).

    What a document must hold for the update to be integrated whole, not kept pending
    (where the CRDT implementations disagree, and the Rust core's state can be left
    damaged): ``resumes``, for each client whose structs go on after a skipped range of its
    clocks, the clock they go on from (the document must hold every clock before it); and
    ``origins``, each ``(client, clock)`` an item's origin or right origin names in another
    client's clocks (the document, or the update, must hold that clock)."""

    clients: frozenset[int]
    starts: dict[int, int]
    ends: dict[int, int]
    deleted: dict[int, int]
    bounds: list[tuple[int, int]]
    pairs: dict[int, list[int]]
    resumes: dict[int, int]
    origins: list[tuple[int, int]]
    ranges: int = 0
    deletes_at: int = 0


_FOUR_BYTES = re.compile(rb"[\xf0-\xf4][\x80-\xbf]{3}")
"""A character past U+FFFF in UTF-8 (two UTF-16 units: a pair): a lead byte and three
continuation bytes (a lead byte alone is common among an update's binary numbers)."""


def _note_pairs(text: bytes, clock: int, into: list[int]) -> None:
    """The clocks of the pairs' first units in ``text``, a string struct at ``clock``."""
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError:
        return
    for char in decoded:
        if ord(char) > 0xFFFF:
            into.append(clock)
            clock += 2
        else:
            clock += 1


def pairs_in(update: bytes, root: str) -> dict[int, list[int]]:
    """An update's :attr:`UpdateShape.pairs`, read only if its bytes may hold a character
    past U+FFFF (none for an update that cannot be read)."""
    if not _FOUR_BYTES.search(update):
        return {}
    try:
        return read_text_update(update, root).pairs
    except ProtocolError:
        return {}


def splits_a_pair(
    bounds: Iterable[tuple[int, int]], *pairs: Mapping[int, Collection[int]]
) -> tuple[int, int] | None:
    """The first of ``bounds`` that falls between the two UTF-16 units of a character past
    U+FFFF (one of ``pairs``, by client, holds its first unit's clock), if one does.

    Yjs, splitting such a character, makes both halves U+FFFD; the Rust core under pycrdt
    cannot hold half a character and places the text elsewhere, differently again once the
    document is loaded anew: the texts would differ for good. No editor binding places text
    there (it moves over the pair as one character)."""
    for client, clock in bounds:
        for held in pairs:
            firsts = held.get(client)
            if firsts and clock in firsts:
                return client, clock
    return None


def _clock_span(text: bytes) -> int:
    """The clocks a string takes: its length in UTF-16 units, as Yjs counts it; for bytes that
    are not UTF-8 (no encoder writes them), their number, which is at least that."""
    if text.isascii():
        return len(text)
    try:
        return len(text.decode("utf-8").encode("utf-16-le")) // 2
    except UnicodeDecodeError:
        return len(text)


def text_update_clients(update: bytes, root: str) -> frozenset[int]:
    """The clients whose structs ``update`` carries (see :func:`read_text_update`)."""
    return read_text_update(update, root).clients


def read_text_update(update: bytes, root: str) -> UpdateShape:
    """What ``update`` holds; raises ``INVALID_UPDATE`` if it inserts anything but plain text
    into the root ``root``, holds a collected range (a GC struct: Yjs writes one only for
    the content of a deleted nested type, and stock Yjs turns an item placed next to one
    into another, dropping its text, where the server's core keeps it), has two sections of
    one client, names a client id over 53 bits, a clock (a struct's, its end, an origin's, a
    deleted range's or its end) over 32, places an item after or before its own client's
    clock at or past its own (no client writes one: an item's origins are items that existed
    when it was made; stock clients cannot apply it), or goes on after its delete set (Yjs
    and the Rust core read no further: the server would store and relay bytes that are no
    part of the document, past every cap on what a document holds).

    Only what the update states is checked: an item placed after another (with an origin)
    is in the root of that item, which was checked when it was accepted."""
    data = bytes(update)
    root_name = root.encode("utf-8")
    clients: set[int] = set()
    starts: dict[int, int] = {}
    ends: dict[int, int] = {}
    deleted: dict[int, int] = {}
    bounds: list[tuple[int, int]] = []
    pairs: dict[int, list[int]] = {}
    resumes: dict[int, int] = {}
    origins: list[tuple[int, int]] = []
    sections, pos = _uint(data, 0)
    for _ in range(sections):
        structs, pos = _uint(data, pos)
        client, pos = _client(data, pos)
        clock, pos = _clock(data, pos)
        if client in starts:
            raise _refuse(f"two sections of client {client}")
        starts[client] = clock
        if structs:
            clients.add(client)
        reached = clock  # the end of the section's last struct that is not a skip
        for _ in range(structs):
            if pos >= len(data):
                raise _refuse("truncated")
            info = data[pos]
            pos += 1
            kind = info & 0x1F
            if kind == _SKIP:
                length, pos = _uint(data, pos)
                clock = _within_clocks(clock, length)
                continue
            if clock > reached:  # structs go on after skipped clocks
                resumes[client] = clock
            if kind == _GC:
                # Only the content of a deleted nested type is collected so; text next to
                # such a range is dropped by stock Yjs and kept by the server's core.
                raise _refuse("a collected range (GC struct), which no edit of a text holds")
            if info & _HAS_ORIGIN:  # placed right after that clock
                at, pos = _client(data, pos)
                after, pos = _clock(data, pos)
                bounds.append((at, after))
                _note_origin(client, clock, at, after, origins)
            if info & _HAS_RIGHT_ORIGIN:  # right before that one
                at, pos = _client(data, pos)
                before, pos = _clock(data, pos)
                bounds.append((at, before - 1))
                _note_origin(client, clock, at, before, origins)
            if not info & (_HAS_ORIGIN | _HAS_RIGHT_ORIGIN):  # its parent is given
                named, pos = _uint(data, pos)
                if named != 1:
                    raise _refuse("an item inside a nested type")
                name, pos = _skip_bytes(data, pos)
                if name != root_name:
                    raise _refuse(f"an item in the root {name[:64]!r}, not in {root!r}")
                if info & _HAS_PARENT_SUB:
                    raise _refuse(f"a map entry on {root!r}")
            if kind == _STRING:
                text, pos = _skip_bytes(data, pos)
                if not text:  # (no encoder writes one; the Rust core panics on some)
                    raise _refuse("an empty string")
                if text.isascii():
                    clock = _within_clocks(clock, len(text))
                else:
                    if _FOUR_BYTES.search(text):
                        _note_pairs(text, clock, pairs.setdefault(client, []))
                    clock = _within_clocks(clock, _clock_span(text))
            elif kind == _DELETED:
                length, pos = _uint(data, pos)
                if not length:
                    raise _refuse("an empty deleted range")
                clock = _within_clocks(clock, length)
            else:
                what = _KINDS.get(kind, f"content of unknown kind {kind}")
                raise _refuse(f"{what} where only text belongs")
            reached = clock
        ends[client] = reached
    deletes_at = pos
    total = 0
    count, pos = _uint(data, pos)
    for _ in range(count):
        client, pos = _client(data, pos)
        ranges, pos = _uint(data, pos)
        total += ranges
        for _ in range(ranges):
            start, pos = _clock(data, pos)
            length, pos = _uint(data, pos)
            end = _within_clocks(start, length)
            if end > deleted.get(client, 0):
                deleted[client] = end
            bounds.append((client, start - 1))
            bounds.append((client, end - 1))
    if pos != len(data):  # (the CRDT implementations read no further, and keep them)
        raise _refuse(f"{len(data) - pos} bytes after its delete set")
    return UpdateShape(
        frozenset(clients),
        starts,
        ends,
        deleted,
        bounds,
        pairs,
        resumes,
        origins,
        total,
        deletes_at,
    )


def deleted_ranges(update: bytes, shape: UpdateShape) -> Iterator[tuple[int, int, int]]:
    """The delete set of ``update``, read as ``shape`` by :func:`read_text_update`: each
    deleted range as ``(client, start, end)`` clocks, in the order the update gives them
    (every encoder writes a client's ranges sorted, and merges ranges that touch)."""
    data = bytes(update)
    count, pos = _uint(data, shape.deletes_at)
    for _ in range(count):
        client, pos = _uint(data, pos)
        number, pos = _uint(data, pos)
        for _ in range(number):
            start, pos = _uint(data, pos)
            length, pos = _uint(data, pos)
            yield client, start, start + length


def _note_origin(
    client: int, clock: int, at: int, named: int, origins: list[tuple[int, int]]
) -> None:
    """An item of ``client`` at ``clock`` names ``(at, named)`` as an origin: one of its own
    client must be an earlier clock; another client's is noted (see ``UpdateShape``)."""
    if at != client:
        origins.append((at, named))
    elif named >= clock:
        raise _refuse(
            f"an item of client {client} at clock {clock} is placed by its own clock {named}, "
            "which is not an earlier one"
        )
