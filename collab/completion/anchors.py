"""Positions in live documents that move with every edit, as a Yjs sticky index does.

An anchor sticks to the character before it (a sticky index with ``assoc`` before): text
typed before it shifts it, text inserted exactly at it lands after it, and a deletion around
it collapses it to the deletion's start (and marks it ``cut`` when the character before it
went: what was written up to it is gone). One made ``after`` sticks to the character after
it instead: text inserted exactly at it lands before it (two anchors made at one place, one
of each, hold between them what was typed there since). It follows the document's own
change deltas, which pycrdt reports in UTF-8 bytes like every other ``Text`` index.

(pycrdt 0.14's ``StickyIndex`` cannot be used for this: once a document holds multi-byte
characters, ``get_index`` mixes byte and UTF-16 offsets and returns wrong positions.)
"""

from __future__ import annotations

import logging
from typing import Any

from pycrdt import TextEvent

from ..live.room import Room

__all__ = ["Anchor", "Anchors", "byte_to_codepoint"]

log = logging.getLogger("collab.completion.anchors")


class Anchor:
    """A position in ``room``'s text, in UTF-8 bytes (what pycrdt's ``Text`` takes)."""

    __slots__ = ("after", "alive", "cut", "offset", "room")

    def __init__(self, room: Room, offset: int, *, after: bool = False) -> None:
        self.room = room
        self.offset = offset
        self.after = after
        self.alive = True
        self.cut = False  # the character before it was deleted (see the module's notes)

    def codepoint(self, text: str | None = None) -> int:
        """The position in code points of the room's current text."""
        return byte_to_codepoint(str(self.room.text) if text is None else text, self.offset)


def byte_to_codepoint(text: str, offset: int) -> int:
    return len(text.encode("utf-8")[:offset].decode("utf-8", errors="ignore"))


class _RoomAnchors:
    def __init__(self, room: Room) -> None:
        self.room = room
        self.anchors: set[Anchor] = set()
        self.subscription: Any = room.text.observe(self._changed)

    def _changed(self, event: TextEvent) -> None:
        try:
            delta: list[dict[str, Any]] = list(event.delta)  # type: ignore[attr-defined]
            for anchor in self.anchors:
                if not anchor.after and _deletes_before(anchor.offset, delta):
                    anchor.cut = True
                anchor.offset = _transform(anchor.offset, delta, anchor.after)
        except Exception:
            log.exception("%s: anchors could not follow an edit", self.room.key)


def _transform(offset: int, delta: list[dict[str, Any]], after: bool = False) -> int:
    """``offset`` once ``delta`` is applied; an insert exactly at it moves it if ``after``."""
    position = 0  # in the text before the change
    shift = 0
    for op in delta:
        if "retain" in op:
            position += int(op["retain"])
        elif "insert" in op:
            value = op["insert"]
            if position < offset or (after and position == offset):
                shift += len(value.encode("utf-8")) if isinstance(value, str) else 1
        elif "delete" in op:
            size = int(op["delete"])
            shift -= max(0, min(position + size, offset) - position)
            position += size
        if "insert" not in op and (position > offset or (position == offset and not after)):
            break
    return offset + shift


def _deletes_before(offset: int, delta: list[dict[str, Any]]) -> bool:
    """Whether ``delta`` deletes the byte just before ``offset`` (so the character there)."""
    position = 0  # in the text before the change
    for op in delta:
        if "retain" in op:
            position += int(op["retain"])
        elif "delete" in op:
            size = int(op["delete"])
            if position < offset <= position + size:
                return True
            position += size
        if position >= offset:
            return False
    return False


class Anchors:
    """Every live anchor, observing only the rooms that have some."""

    def __init__(self) -> None:
        self._rooms: dict[int, _RoomAnchors] = {}

    def __len__(self) -> int:
        return sum(len(r.anchors) for r in self._rooms.values())

    def add(self, room: Room, offset: int, *, after: bool = False) -> Anchor:
        watched = self._rooms.get(id(room))
        if watched is None:
            watched = self._rooms[id(room)] = _RoomAnchors(room)
        anchor = Anchor(room, offset, after=after)
        watched.anchors.add(anchor)
        return anchor

    def remove(self, anchor: Anchor) -> None:
        anchor.alive = False
        watched = self._rooms.get(id(anchor.room))
        if watched is None:
            return
        watched.anchors.discard(anchor)
        if not watched.anchors:
            del self._rooms[id(anchor.room)]
            try:
                anchor.room.text.unobserve(watched.subscription)
            except Exception:
                log.debug("%s: unobserve failed", anchor.room.key, exc_info=True)

    def clear(self) -> None:
        for watched in list(self._rooms.values()):
            for anchor in list(watched.anchors):
                self.remove(anchor)
