"""Marks of merged commits: a server-side edit with a mark stores the change and the mark as
one update, a document holds the marks it was given (after a reload from the store too),
and an edit that changes nothing still records its mark."""

from __future__ import annotations

from typing import Any

from pycrdt import Doc, Text

from collab.live.marks import MARK_BASE, mark_id
from collab.live.origin import Origin
from collab.live.room import Room
from collab.live.seed import TEXT_NAME
from collab.store.memory_store import MemoryStore
from protocol.names import DocId
from protocol.yjs import YjsLimits

DOC = DocId.parse("demo/main:a.md")


async def room_with(text: str, store: MemoryStore) -> Room:
    doc: Doc[Any] = Doc(client_id=7)
    doc.get(TEXT_NAME, type=Text).insert(0, text)
    await store.append(str(DOC), doc.get_update())
    return Room(DOC, doc, store, last_seq=1, limits=YjsLimits())


async def test_an_edit_and_its_mark_are_stored_as_one_update() -> None:
    store = MemoryStore()
    await store.start()
    room = await room_with("hello\n", store)
    mark = mark_id(b"a" * 40, "a.md")
    assert mark >= MARK_BASE and not room.has_mark(mark)
    await room.edit(lambda text: text.insert(0, "merged "), origin=Origin.GIT, mark=mark)
    assert room.has_mark(mark) and str(room.text) == "merged hello\n"
    stored = await store.load(str(DOC))
    assert stored is not None and len(stored.updates) == 2  # the seed, then one update
    reloaded: Doc[Any] = Doc()
    for _seq, update in stored.updates:
        reloaded.apply_update(update)
    again = Room(DOC, reloaded, store, last_seq=2, limits=YjsLimits())
    assert again.has_mark(mark) and str(again.text) == "merged hello\n"  # no visible trace
    assert not again.has_mark(mark_id(b"b" * 40, "a.md"))
    assert not again.has_mark(mark_id(b"a" * 40, "b.md"))


async def test_an_edit_that_changes_nothing_still_records_its_mark() -> None:
    store = MemoryStore()
    await store.start()
    room = await room_with("same\n", store)
    mark = mark_id(b"c" * 40, "a.md")
    await room.edit(lambda text: None, origin=Origin.GIT, mark=mark)
    assert room.has_mark(mark) and str(room.text) == "same\n"
    stored = await store.load(str(DOC))
    assert stored is not None and len(stored.updates) == 2
    await room.edit(lambda text: None, origin=Origin.GIT, mark=mark)  # once only
    stored = await store.load(str(DOC))
    assert stored is not None and len(stored.updates) == 2
