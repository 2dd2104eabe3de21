"""The ``Store`` seam: a durable, per-document log of CRDT updates and snapshots."""

from __future__ import annotations

from collections.abc import Awaitable, Collection
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from pycrdt import Doc

__all__ = [
    "BehindSnapshot",
    "CorruptRecord",
    "Fence",
    "FenceLost",
    "Store",
    "StoredDoc",
    "WriteCounts",
    "check_compact",
    "no_fence",
]


class BehindSnapshot(ValueError):
    """A compaction through a sequence number behind the document's current snapshot.

    In a cluster this is no mistake: another node, further along the shared log, has just
    stored a snapshot that holds everything this one would have."""


class Fence(Protocol):
    """The lease a write is made under (a ``collab.bus.lease.Grant``): a store that shares
    the cluster's leases writes it only while that grant still holds the lease."""

    @property
    def name(self) -> str: ...

    @property
    def node_id(self) -> str: ...

    @property
    def token(self) -> int: ...


class FenceLost(ValueError):
    """A write under a lease the writer no longer holds: refused, nothing written. (A node
    paused past its lease: the node holding it now does the work.)"""


def no_fence(store: object, fence: Fence | None) -> None:
    """Refuse a fence where there are no leases (a single node's store)."""
    if fence is not None:
        raise ValueError(f"{type(store).__name__} keeps no leases: a write under one is a mistake")


def check_compact(doc_id: str, through_seq: int, last_seq: int, snapshot_seq: int | None) -> None:
    """Refuse a compaction past the last appended update (``ValueError``) or behind the
    current snapshot (``BehindSnapshot``)."""
    if through_seq < 0:
        raise ValueError(f"compact({doc_id!r}): through_seq {through_seq} is negative")
    if through_seq > last_seq:
        raise ValueError(
            f"compact({doc_id!r}): through_seq {through_seq} is past the last seq {last_seq}"
        )
    if snapshot_seq is not None and through_seq < snapshot_seq:
        raise BehindSnapshot(
            f"compact({doc_id!r}): through_seq {through_seq} is behind the current "
            f"snapshot at seq {snapshot_seq}"
        )


@runtime_checkable
class WriteCounts(Protocol):
    """What a store that writes somewhere (SQLite's file, Redis) says of its writes, read by
    ``/healthz`` and ``/metrics`` alike whatever the store: the same alerts hold for both."""

    @property
    def appended(self) -> int:
        """Updates written."""
        ...

    @property
    def write_errors(self) -> int:
        """Writes (appends, compactions, deletions, ...) that failed."""
        ...

    @property
    def write_failure(self) -> str | None:
        """Why writes fail, from a write that failed until they succeed again; ``None``
        while they succeed."""
        ...


@dataclass(frozen=True, slots=True)
class CorruptRecord:
    """A damaged record (its checksum did not match, say): the document's history is not
    whole, and must not be served as if it were (see ``collab store repair``)."""

    doc_id: str
    seq: int
    reason: str


@dataclass(frozen=True, slots=True)
class StoredDoc:
    """What a store holds for one document, in the order it must be applied.

    ``snapshot`` (if any) is a full encoded state that replaces every update up to and
    including ``snapshot_seq``; ``updates`` are the later updates with their sequence
    numbers, ascending. ``corrupt`` reports the first damaged record; the records from it on
    were not returned. ``recovered``: the history was repaired after damage, and may lack
    edits that its branch head has (commits that would shrink a file drastically are held).
    A recovered document may have no records left (its history was lost): it is seeded again.
    """

    snapshot: bytes | None
    snapshot_seq: int
    updates: list[tuple[int, bytes]] = field(default_factory=list)
    corrupt: CorruptRecord | None = None
    recovered: bool = False

    @property
    def last_seq(self) -> int:
        return self.updates[-1][0] if self.updates else self.snapshot_seq

    @property
    def empty(self) -> bool:
        """No records at all (only a recovered document's history can be empty)."""
        return self.snapshot is None and not self.updates

    def apply_to(self, doc: Doc[Any]) -> None:
        """Replay the snapshot, then the updates, onto ``doc``."""
        if self.snapshot is not None:
            doc.apply_update(self.snapshot)
        for _seq, update in self.updates:
            doc.apply_update(update)


@runtime_checkable
class Store(Protocol):
    """Durable storage of CRDT history, keyed by document id string.

    An update is first written, then durable: ``append`` is done once the update is written
    (every later ``load`` returns it, and it survives the server process dying), and
    ``sync`` once every earlier append is durable (it survives a power loss, too). Appends
    made concurrently are written together, and syncs are grouped (one fsync for many).
    """

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def load(self, doc_id: str) -> StoredDoc | None:
        """Return the document's history, or ``None`` if the store has never seen it."""
        ...

    def append(
        self, doc_id: str, update: bytes, fence: Fence | None = None, author: str | None = None
    ) -> Awaitable[int]:
        """Append one update; its sequence number (strictly increasing), once written.

        Appends are committed in the order they were made. Implementations may be
        coroutines or return a future. With a ``fence`` (a cluster's store), the update is
        written only while the fence's grant holds its lease, else ``FenceLost``; a store
        without leases refuses a fence (``ValueError``). ``author``: the person who wrote
        it, whom a store the nodes of a cluster share keeps for ``take_authors``."""
        ...

    async def take_authors(self, branch: str, paths: Collection[str] | None = None) -> list[str]:
        """The people who wrote to documents of ``branch`` (``repo/branch``) since their
        last commit: the authors of its next commit, whichever node makes it, or whichever
        process after a crash. With ``paths``, the commit's files: a store that knows who
        wrote to which document (a cluster's) gives the writers of those only; the SQLite
        store gives the branch's (one node commits a branch's files together). A durable
        store forgets them only when their commit is settled (:meth:`settle_authors`);
        the in-memory store keeps none (its process knows its writers)."""
        ...

    def authors_of(self, branch: str, paths: Collection[str] | None) -> list[str]:
        """Of those the last :meth:`take_authors` of ``branch`` gave, the writers of
        ``paths`` (None: all), as a store that knows who wrote to which document can say;
        a commit asks once its files are known (no await: they are its files as taken)."""
        ...

    async def settle_authors(
        self, branch: str, users: Collection[str], paths: Collection[str] | None = None
    ) -> None:
        """The commit of ``paths`` (None: all of the branch's documents) naming ``users``,
        the people :meth:`take_authors` gave last, has landed: a store that keeps them until
        then (so that a crash before it, of any node, does not forget them) forgets what
        they wrote to those documents now, but what they wrote since that take."""
        ...

    def sync(self) -> Awaitable[None]:
        """Done once every append made before the call is durable."""
        ...

    async def compact(self, doc_id: str, snapshot: bytes, through_seq: int) -> None:
        """Replace every record up to ``through_seq`` with ``snapshot``, atomically."""
        ...

    async def delete(self, doc_id: str) -> None:
        """Forget the document entirely."""
        ...

    async def keys(self, prefix: str = "") -> list[str]:
        """Every document id with records that starts with ``prefix``, sorted."""
        ...

    async def clear_recovered(self, doc_id: str) -> None:
        """Forget that the document's history was recovered after damage (its text was
        committed since)."""
        ...
