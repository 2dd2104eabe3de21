"""``MemoryStore``: an in-memory ``Store`` for tests and ephemeral servers."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from dataclasses import dataclass, field

from collab.lifecycle import Lifecycle
from collab.store.base import Fence, StoredDoc, check_compact, no_fence

__all__ = ["MemoryStore"]


@dataclass(slots=True)
class _Doc:
    snapshot: bytes | None = None
    snapshot_seq: int = 0
    updates: list[tuple[int, bytes]] = field(default_factory=list)


class MemoryStore(Lifecycle):
    """A ``Store`` that keeps every document in process memory.

    It has the same semantics as ``SQLiteStore`` except durability: nothing survives the
    process, but the data does survive ``stop()``/``start()`` of the same instance (which
    makes it handy for simulating a server restart in tests). Sequence numbers are never
    reused for a document id, not even after ``compact`` or ``delete``.
    """

    def __init__(self) -> None:
        self._docs: dict[str, _Doc] = {}
        self._last_seq: dict[str, int] = {}
        self._running = False
        self.commits = 0
        """Number of write operations (appends, compactions, deletes) performed."""
        self.appended = 0
        """Number of updates appended."""

    async def start(self) -> None:
        self._running = True

    async def stop(self) -> None:
        self._running = False

    def _check_running(self) -> None:
        if not self._running:
            raise RuntimeError("store is not running (call start() first, or it was stopped)")

    async def load(self, doc_id: str) -> StoredDoc | None:
        self._check_running()
        return self.read(doc_id)

    def read(self, doc_id: str) -> StoredDoc | None:
        """What ``load`` returns, read at once (the in-process bus replays from it)."""
        doc = self._docs.get(doc_id)
        if doc is None:
            return None
        return StoredDoc(doc.snapshot, doc.snapshot_seq, list(doc.updates))

    async def append(
        self, doc_id: str, update: bytes, fence: Fence | None = None, author: str | None = None
    ) -> int:
        self._check_running()
        no_fence(self, fence)
        data = bytes(update)
        seq = self._last_seq.get(doc_id, 0) + 1
        self._last_seq[doc_id] = seq
        self._docs.setdefault(doc_id, _Doc()).updates.append((seq, data))
        self.commits += 1
        self.appended += 1
        return seq

    def sync(self) -> asyncio.Future[None]:
        """Done at once: nothing here outlives the process anyway."""
        self._check_running()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def compact(self, doc_id: str, snapshot: bytes, through_seq: int) -> None:
        self._check_running()
        data = bytes(snapshot)
        last_seq = self._last_seq.get(doc_id, 0)
        doc = self._docs.get(doc_id)
        snapshot_seq = doc.snapshot_seq if doc is not None and doc.snapshot is not None else None
        check_compact(doc_id, through_seq, last_seq, snapshot_seq)
        if doc is None:
            doc = self._docs[doc_id] = _Doc()
        doc.snapshot = data
        doc.snapshot_seq = through_seq
        doc.updates = [(seq, u) for seq, u in doc.updates if seq > through_seq]
        self._last_seq[doc_id] = max(last_seq, through_seq)
        self.commits += 1

    async def take_authors(self, branch: str, paths: Collection[str] | None = None) -> list[str]:
        self._check_running()
        return []

    def authors_of(self, branch: str, paths: Collection[str] | None) -> list[str]:
        return []

    async def settle_authors(
        self, branch: str, users: Collection[str], paths: Collection[str] | None = None
    ) -> None:
        self._check_running()

    async def keys(self, prefix: str = "") -> list[str]:
        self._check_running()
        return sorted(k for k in self._docs if k.startswith(prefix))

    async def delete(self, doc_id: str) -> None:
        self._check_running()
        self._docs.pop(doc_id, None)
        self.commits += 1

    async def clear_recovered(self, doc_id: str) -> None:
        """Nothing to do: a memory store is never damaged, so never repaired."""
        self._check_running()
