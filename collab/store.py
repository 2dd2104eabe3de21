"""The ``Store`` seam: a durable, per-document log of CRDT updates and snapshots."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from pycrdt import Doc

__all__ = ["CorruptRecord", "Store", "StoredDoc"]


@dataclass(frozen=True, slots=True)
class CorruptRecord:
    """A record whose checksum did not match; it and every later record were skipped."""

    doc_id: str
    seq: int
    reason: str


@dataclass(frozen=True, slots=True)
class StoredDoc:
    """What a store holds for one document, in the order it must be applied.

    ``snapshot`` (if any) is a full encoded state that replaces every update up to and
    including ``snapshot_seq``; ``updates`` are the later updates with their sequence
    numbers, ascending. ``corrupt`` reports a torn or corrupt tail that was not returned.
    """

    snapshot: bytes | None
    snapshot_seq: int
    updates: list[tuple[int, bytes]] = field(default_factory=list)
    corrupt: CorruptRecord | None = None

    @property
    def last_seq(self) -> int:
        return self.updates[-1][0] if self.updates else self.snapshot_seq

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

    def append(self, doc_id: str, update: bytes) -> Awaitable[int]:
        """Append one update; its sequence number (strictly increasing), once written.

        Appends are committed in the order they were made. Implementations may be
        coroutines or return a future."""
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
