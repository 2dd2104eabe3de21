"""Reading a prompt's parts: the text around the cursor from the live document, and other
files of the same branch (from git at the branch head, or their live documents where those
are loaded), ranked for the file being edited, within a character budget.

What comes first in a prompt is kept still between a typist's requests, so that the
worker's cache of their last prompt keeps matching: the prefix starts where the typist's
last one in that part of the file did while it fits (else at a line start on a grid of the
document: see :mod:`.excerpt`), and the other files chosen for a typist, with their texts,
are frozen: other typists' edits to their live documents do not reach the prompt until those
texts drifted by a quarter from what was taken, nor a new branch head until it changed one of
the files taken from git (commits of the live documents move the head every few seconds and
change nothing there); either is looked at only once the files are ``hold`` seconds old (a
new choice prefills a whole prompt again, where a keystroke prefills a few dozen tokens: at
most one every 30 s per typist), and at the latest after ``ttl`` seconds everything is
chosen again.
"""

from __future__ import annotations

import collections
import time
import weakref
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from gitsync.repos import BranchNotFound, RepoNotFound, Repositories

from ..git.work import in_git_thread, in_repo
from ..live.origin import Origin
from ..live.room import Room
from ..live.rooms import Rooms
from ..server.auth import Identity
from .branch_context import BlobTexts, Candidate, blob_ids, list_branch, rank, read_blob
from .excerpt import Starts
from .prefix_cache import common_prefix
from .prompts import CONTEXT_SHARE, ContextFile, PromptParts

__all__ = ["ContextGatherer", "drift", "open_rooms", "window"]

_CHARS_PER_TOKEN = 4  # generous: workers trim exactly with their own tokenizer
_PREFIX_CHARS_PER_TOKEN = 3  # for code: workers cut what is over with their tokenizer
_GRID = 8  # the grid of prefix starts: an eighth of a prefix's size
_MAX_EDITED = 10_000
_MAX_SNAPSHOTS = 1024
_MAX_HEADS = 16
_SPARE = 2  # candidates read beyond ``max_files``, for those that turn out empty
_DRIFT = 4  # frozen texts are taken again once a quarter of them changed...
_MIN_DRIFT = 256  # ...and at least this many characters
_MARK = 64  # characters that find the end of a text taken again


@dataclass(frozen=True, slots=True)
class _Source:
    """Where a context file's text came from: a live document, or a blob of the branch head."""

    room: str | None  # the live document's key
    sha: bytes | None  # the blob, for a file read from git
    length: int  # the whole text's length when it was taken


@dataclass(slots=True)
class _Snapshot:
    """The other files chosen for one typist, as they went into their prompts."""

    taken: float
    head: bytes | None
    files: tuple[ContextFile, ...]
    sources: tuple[_Source, ...]


def drift(taken: str, now: str, length: int) -> int:
    """About how many characters of ``taken`` (the start of a text then ``length`` long)
    differ in ``now``, the whole text today: what lies between their shared start and their
    shared end. The end of ``taken`` is looked for in ``now`` where the whole text's growth
    would put it (all edits inside the part taken), where it was (all edits past it), and
    where its last characters are found again (edits both inside and past it); the one
    that shares the longest end counts."""
    head = common_prefix(taken, now)
    if head == len(taken):
        return 0
    grown = len(now) - length
    ends = {len(taken) + grown, len(taken)}
    mark = taken[-_MARK:]
    low = max(head, len(taken) - abs(grown) - len(mark))
    found = now.find(mark, low, len(taken) + abs(grown) + len(mark))
    if found >= 0:
        ends.add(found + len(mark))
    best = (0, max(len(taken), len(now)) - head)  # (-shared end, difference)
    for end in ends:
        if end < head:
            continue
        aligned = now[:end]
        tail = common_prefix(taken[head:][::-1], aligned[head:][::-1])
        best = min(best, (-tail, max(len(taken), len(aligned)) - head - tail))
    return best[1]


def window(
    text: str,
    index: int,
    budget: int,
    starts: Starts | None = None,
    key: Hashable | None = None,
) -> tuple[str, str]:
    """The prefix and suffix around code point ``index`` of ``text`` for a prompt of about
    ``budget`` tokens. The prefix starts where ``key``'s last prefix in this part of the file
    started, while it fits; else at a line start on a grid of the document (see
    :mod:`.excerpt`), so that it stays put while the typist types, and comes back when the
    typist does."""
    size = budget * _PREFIX_CHARS_PER_TOKEN * 60 // 100
    start = (starts if starts is not None else Starts()).choose(
        key,
        text,
        index,
        lambda at: index - at <= size,
        grain=max(1, size // _GRID),
        least=size // _GRID,
    )
    return text[start:index], text[index : index + budget * _CHARS_PER_TOKEN * 15 // 100]


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

    def __init__(
        self,
        rooms: Rooms,
        repos: Repositories,
        *,
        budget: int = 2048,
        max_files: int = 8,
        ttl: float = 300.0,
        hold: float = 30.0,
    ) -> None:
        self.rooms = rooms
        self.repos = repos
        self.budget = budget
        self.max_files = max_files
        self.ttl = ttl
        self.hold = hold
        self.edited: dict[str, float] = {}
        self.blobs = BlobTexts()
        self._watched: weakref.WeakSet[Room] = weakref.WeakSet()
        self._listings: collections.OrderedDict[tuple[str, bytes], list[tuple[str, bytes]]] = (
            collections.OrderedDict()
        )
        self._snapshots: collections.OrderedDict[tuple[Hashable, str], _Snapshot] = (
            collections.OrderedDict()
        )
        self._starts = Starts(max_keys=_MAX_SNAPSHOTS)

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

    async def gather(
        self,
        room: Room,
        text: str,
        index: int,
        connection: object | None,
        owner: Hashable | None = None,
    ) -> PromptParts:
        """The parts of a prompt for code point ``index`` of ``text`` (``room``'s text);
        ``owner`` (the requester) keeps the same other files, and their texts, while they
        stay close to what they are now (see :meth:`context`)."""
        self.watch(room)
        key = None if owner is None else (owner, room.key)
        prefix, suffix = window(text, index, self.budget, self._starts, key)
        files = await self.context(room, text, connection, owner)
        doc_id = room.doc_id
        return PromptParts(doc_id.repo, doc_id.path, prefix, suffix, files, index - len(prefix))

    async def context(
        self, room: Room, text: str, connection: object | None, owner: Hashable | None = None
    ) -> tuple[ContextFile, ...]:
        """Other files of ``room``'s branch for a prompt, most relevant first; for an
        ``owner``, the files and texts it had last time while they are still good."""
        now = time.monotonic()
        key = (owner, room.key)
        if owner is not None:
            kept = self._snapshots.get(key)
            if kept is not None and await self._still_good(kept, room, now):
                self._snapshots.move_to_end(key)
                return kept.files
        else:
            kept = None
        snapshot = await self._choose(room, text, connection, now, kept)
        if owner is not None:
            self._snapshots[key] = snapshot
            self._snapshots.move_to_end(key)
            while len(self._snapshots) > _MAX_SNAPSHOTS:
                self._snapshots.popitem(last=False)
        return snapshot.files

    async def _still_good(self, kept: _Snapshot, room: Room, now: float) -> bool:
        """Whether ``kept`` may serve again: younger than ``ttl``, and younger than ``hold``
        or its live texts drifted by less than a quarter and no file it took from git
        changed at the branch head."""
        if now - kept.taken >= self.ttl:
            return False
        if now - kept.taken < self.hold:
            return True
        changed = total = 0
        for item, source in zip(kept.files, kept.sources, strict=True):
            total += len(item.text)
            if source.room is not None:
                live = self.rooms.get_key(source.room)
                if live is None or live.failed:
                    return False
                changed += drift(item.text, str(live.text), source.length)
        if changed > max(_MIN_DRIFT, total // _DRIFT):
            return False
        from_git = {i.path: s.sha for i, s in zip(kept.files, kept.sources, strict=True) if s.sha}
        if not from_git:
            return True
        doc_id = room.doc_id
        head = await self._head(doc_id.repo, doc_id.branch)
        if head == kept.head:
            return True
        if head is None:
            return False
        now_at = await in_repo(self.repos, doc_id.repo, blob_ids, head, list(from_git))
        if now_at != from_git:
            return False
        kept.head = head  # a commit of other files: checked once
        return True

    async def _choose(
        self,
        room: Room,
        text: str,
        connection: object | None,
        now: float,
        last: _Snapshot | None = None,
    ) -> _Snapshot:
        """The best files for the prompt now; those also in ``last`` (the typist's former
        choice) keep their order at its head, so that a prompt cache shares up to the first
        file whose text changed."""
        doc_id = room.doc_id
        branch = f"{doc_id.repo}/{doc_id.branch}:"
        head = await self._head(doc_id.repo, doc_id.branch)
        candidates = {
            path: Candidate(path, sha, self.edited.get(branch + path))
            for path, sha in await self._listing(doc_id.repo, head)
        }
        live = {r.doc_id.path: r for r in self.rooms.loaded(branch) if not r.failed}
        mine = [r for r in open_rooms(connection) if r.key.startswith(branch) and not r.failed]
        for other in [*live.values(), *mine]:
            live[other.doc_id.path] = other
            self.watch(other)
            known = candidates.get(other.doc_id.path)
            sha = known.sha if known is not None else None
            candidates[other.doc_id.path] = Candidate(
                other.doc_id.path, sha, self.edited.get(other.key)
            )
        ranked = rank(doc_id.path, text, candidates, now, [r.doc_id.path for r in mine])
        wanted = ranked[: self.max_files + _SPARE]
        if last is not None:
            before = {item.path: n for n, item in enumerate(last.files)}
            wanted.sort(key=lambda c: before.get(c.path, len(before)))  # stable: rank after
        await self._read([c.sha for c in wanted if c.path not in live and c.sha], doc_id.repo)
        left = self.budget * CONTEXT_SHARE // 100 * _CHARS_PER_TOKEN  # what a prompt holds
        files: list[ContextFile] = []
        sources: list[_Source] = []
        for item in wanted:
            if left < 200 or len(files) >= self.max_files:
                break
            if item.path in live:
                whole = str(live[item.path].text)
                body: str | None = whole
                source = _Source(live[item.path].key, None, len(whole))
            else:
                body = self.blobs.get(item.sha)[1] if item.sha else None
                source = _Source(None, item.sha, len(body or ""))
            if body and body.strip():
                body = body[:left]
                files.append(ContextFile(item.path, body))
                sources.append(source)
                left -= len(body) + len(item.path)
        return _Snapshot(now, head, tuple(files), tuple(sources))

    async def _head(self, repo: str, branch: str) -> bytes | None:
        """The branch's head commit; None without one."""
        try:
            return await in_git_thread(self.repos, self.repos.branch_head, repo, branch)
        except (RepoNotFound, BranchNotFound):
            return None

    async def _listing(self, repo: str, head: bytes | None) -> list[tuple[str, bytes]]:
        """The files at a branch head (listed once per head); none without one."""
        if head is None:
            return []
        repos = self.repos
        key = (repo, head)
        listing = self._listings.get(key)
        if listing is None:
            listing = await in_repo(repos, repo, list_branch, head)
            self._listings[key] = listing
            while len(self._listings) > _MAX_HEADS:
                self._listings.popitem(last=False)
        self._listings.move_to_end(key)
        return listing

    async def _read(self, shas: list[bytes], repo: str) -> None:
        """Read the blobs among ``shas`` not read before, in one trip to a git thread."""
        missing = [sha for sha in dict.fromkeys(shas) if not self.blobs.get(sha)[0]]
        if not missing:
            return

        def read_all(opened: Any) -> list[tuple[bytes, str | None]]:
            return [(sha, read_blob(opened, sha)) for sha in missing]

        for sha, text in await in_repo(self.repos, repo, read_all):
            self.blobs.put(sha, text)
