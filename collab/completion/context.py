"""Reading a prompt's parts from the live documents: the text around the cursor, and other
files of the same branch (recently edited and open documents first) within a token budget."""

from __future__ import annotations

import posixpath
import time
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from protocol.names import DocId

from ..auth import Identity
from ..origin import Origin
from ..room import Room
from .prompts import ContextFile, PromptParts

if TYPE_CHECKING:
    from ..server import CollabServer

__all__ = ["ContextGatherer", "open_rooms"]

_CHARS_PER_TOKEN = 4  # generous: workers trim exactly with their own tokenizer
_KEYS_TTL = 5.0  # seconds a branch's list of documents is reused
_MAX_EDITED = 10_000


def open_rooms(connection: object | None) -> list[Room]:
    """The rooms a ``/ws`` connection has open (none for HTTP)."""
    docs: Any = getattr(connection, "docs", None)
    if not isinstance(docs, dict):
        return []
    rooms = []
    for peer in docs.values():
        room = getattr(peer, "room", None)
        if isinstance(room, Room):
            rooms.append(room)
    return rooms


class ContextGatherer:
    """Builds :class:`PromptParts` and remembers when each document was last edited."""

    def __init__(self, server: CollabServer, *, budget: int = 2048, max_files: int = 8) -> None:
        self.server = server
        self.budget = budget
        self.max_files = max_files
        self.edited: dict[str, float] = {}
        self._watched: weakref.WeakSet[Room] = weakref.WeakSet()
        self._keys: dict[str, tuple[float, list[str]]] = {}

    def watch(self, room: Room) -> None:
        if room not in self._watched:
            self._watched.add(room)
            room.listeners.append(self._changed)

    def _changed(self, room: Room, origin: Origin, author: Identity | None) -> None:
        if origin is not Origin.SEED:
            self.edited[room.key] = time.monotonic()
            if len(self.edited) > _MAX_EDITED:  # forget the oldest half
                ordered = sorted(self.edited.items(), key=lambda item: item[1])
                self.edited = dict(ordered[len(ordered) // 2 :])

    async def _branch_keys(self, doc_id: DocId) -> list[str]:
        prefix = f"{doc_id.repo}/{doc_id.branch}:"
        now = time.monotonic()
        cached = self._keys.get(prefix)
        if cached is not None and now - cached[0] < _KEYS_TTL:
            return cached[1]
        keys = await self.server.store.keys(prefix)
        self._keys[prefix] = (now, keys)
        if len(self._keys) > 1024:
            self._keys.clear()
        return keys

    async def gather(
        self, room: Room, text: str, index: int, connection: object | None
    ) -> PromptParts:
        """The parts of a prompt for code point ``index`` of ``text`` (``room``'s text)."""
        self.watch(room)
        budget = self.budget * _CHARS_PER_TOKEN
        prefix = text[max(0, index - budget * 60 // 100) : index]
        suffix = text[index : index + budget * 15 // 100]
        left = budget - len(prefix) - len(suffix)
        files: list[ContextFile] = []
        for other in await self._candidates(room, connection):
            if left < 200 or len(files) >= self.max_files:
                break
            body = str(other.text)[:left]
            if body.strip():
                files.append(ContextFile(other.doc_id.path, body))
                left -= len(body) + len(other.doc_id.path)
        doc_id = room.doc_id
        return PromptParts(doc_id.repo, doc_id.path, prefix, suffix, tuple(files))

    async def _candidates(self, room: Room, connection: object | None) -> list[Room]:
        doc_id = room.doc_id
        same_branch = [
            r
            for r in open_rooms(connection)
            if r.doc_id.repo == doc_id.repo and r.doc_id.branch == doc_id.branch
        ]
        mine = {r.key for r in same_branch}
        for key in await self._branch_keys(doc_id):
            loaded = self.server.rooms.get_key(key)
            if loaded is not None and key not in mine:
                same_branch.append(loaded)
        for other in same_branch:
            self.watch(other)
        return _ranked(room, (r for r in same_branch if r is not room), mine, self.edited)


def _ranked(
    room: Room, others: Iterable[Room], mine: set[str], edited: dict[str, float]
) -> list[Room]:
    """Recently edited first, then the requester's open documents, then the nearest paths."""
    here = posixpath.dirname(room.doc_id.path).split("/")

    def distance(other: Room) -> int:
        there = posixpath.dirname(other.doc_id.path).split("/")
        common = 0
        for a, b in zip(here, there, strict=False):
            if a != b:
                break
            common += 1
        return len(here) + len(there) - 2 * common

    unique = {r.key: r for r in others if not r.failed}
    return sorted(
        unique.values(),
        key=lambda r: (-edited.get(r.key, 0.0), r.key not in mine, distance(r), r.key),
    )
