"""The in-process bus: several nodes in one process sharing one in-memory store.

``LocalHub`` is the shared part (the store every node reads, the nodes alive); each node has
a ``hub.store(node_id)`` and a ``hub.bus(node_id)``. A single node on a hub of its own is
the embedded default: nothing else appends, so nothing is ever delivered. Several nodes on
one hub behave as a cluster on one Redis does (deliveries come later, in order, never to the
node that appended), which lets the cluster's logic be tested without Redis.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Collection

from collab.bus.bus import BusListener, Watch
from collab.lifecycle import Lifecycle
from collab.store.base import Fence, StoredDoc, no_fence
from collab.store.memory_store import MemoryStore

__all__ = ["HubBus", "HubStore", "LocalHub"]


class LocalHub:
    """The store and the nodes that the in-process cluster shares."""

    def __init__(self) -> None:
        self.shared = MemoryStore()
        self._origin: dict[tuple[str, int], str] = {}
        self._buses: dict[str, HubBus] = {}
        # by branch: who wrote to which document since their commit, (path, user), each
        # with the mark of their last append to it
        self.authors: dict[str, dict[tuple[str, str], int]] = {}
        self._marks = 0

    def store(self, node_id: str) -> HubStore:
        return HubStore(self, node_id)

    def bus(self, node_id: str) -> HubBus:
        return HubBus(self, node_id)

    def _appended(self, doc_id: str, seq: int, update: bytes, node_id: str) -> None:
        self._origin[doc_id, seq] = node_id
        for bus in list(self._buses.values()):
            bus._deliver(doc_id, seq, update, node_id)

    def _awareness(self, doc_id: str, node_id: str, payload: bytes) -> None:
        for bus in list(self._buses.values()):
            if bus.node_id != node_id:
                bus._hear(doc_id, node_id, payload)

    def _joined(self, bus: HubBus) -> None:
        self._buses[bus.node_id] = bus

    def _left(self, bus: HubBus) -> None:
        if self._buses.get(bus.node_id) is bus:
            del self._buses[bus.node_id]
            for other in list(self._buses.values()):
                other._gone(bus.node_id)

    def origin(self, doc_id: str, seq: int) -> str | None:
        """The node that appended an update (``None`` once compacted away)."""
        return self._origin.get((doc_id, seq))


class HubStore(Lifecycle):
    """One node's handle on the hub's shared store (a ``Store``)."""

    def __init__(self, hub: LocalHub, node_id: str) -> None:
        self.hub = hub
        self.node_id = node_id
        self._running = False
        self._taken: dict[str, dict[tuple[str, str], int]] = {}  # branch -> what a take gave

    async def start(self) -> None:
        await self.hub.shared.start()
        self._running = True

    async def stop(self) -> None:
        self._running = False

    def _check_running(self) -> None:
        if not self._running:
            raise RuntimeError("store is not running (call start() first, or it was stopped)")

    async def load(self, doc_id: str) -> StoredDoc | None:
        self._check_running()
        return await self.hub.shared.load(doc_id)

    async def append(
        self, doc_id: str, update: bytes, fence: Fence | None = None, author: str | None = None
    ) -> int:
        no_fence(self, fence)
        self._check_running()
        data = bytes(update)
        if author is not None:
            self.hub._marks += 1
            branch, _, path = doc_id.partition(":")
            self.hub.authors.setdefault(branch, {})[path, author] = self.hub._marks
        seq = await self.hub.shared.append(doc_id, data)
        self.hub._appended(doc_id, seq, data, self.node_id)
        return seq

    def sync(self) -> Awaitable[None]:
        self._check_running()
        return self.hub.shared.sync()

    async def compact(self, doc_id: str, snapshot: bytes, through_seq: int) -> None:
        self._check_running()
        await self.hub.shared.compact(doc_id, snapshot, through_seq)

    async def delete(self, doc_id: str) -> None:
        self._check_running()
        await self.hub.shared.delete(doc_id)

    async def take_authors(self, branch: str, paths: Collection[str] | None = None) -> list[str]:
        self._check_running()
        self._taken[branch] = dict(self.hub.authors.get(branch, {}))
        return self.authors_of(branch, paths)

    def authors_of(self, branch: str, paths: Collection[str] | None) -> list[str]:
        wanted = None if paths is None else set(paths)
        taken = self._taken.get(branch, {})
        return sorted({user for path, user in taken if wanted is None or path in wanted})

    async def settle_authors(
        self, branch: str, users: Collection[str], paths: Collection[str] | None = None
    ) -> None:
        self._check_running()
        marks = self._taken.pop(branch, {})
        kept = self.hub.authors.get(branch, {})
        named = set(users)
        wanted = None if paths is None else set(paths)
        for written, mark in marks.items():
            if written[1] not in named or (wanted is not None and written[0] not in wanted):
                continue
            if kept.get(written) == mark:
                del kept[written]

    async def keys(self, prefix: str = "") -> list[str]:
        self._check_running()
        return await self.hub.shared.keys(prefix)

    async def clear_recovered(self, doc_id: str) -> None:
        self._check_running()
        await self.hub.shared.clear_recovered(doc_id)


class HubBus:
    """One node's bus on the hub (a ``Bus``). Deliveries are scheduled on the event loop, so
    they arrive after the append that caused them returns, as they do over Redis."""

    def __init__(self, hub: LocalHub, node_id: str) -> None:
        self.hub = hub
        self.node_id = node_id
        self._watches: dict[str, Watch] = {}
        self._running = False

    async def start(self) -> None:
        self._running = True
        self.hub._joined(self)

    async def stop(self) -> None:
        self._running = False
        self._watches.clear()
        self.hub._left(self)

    @property
    def healthy(self) -> bool:
        return self._running

    def watch(self, doc_id: str, after: int, listener: BusListener) -> None:
        watch = self._watches[doc_id] = Watch(after, listener)
        stored = self.hub.shared.read(doc_id)
        if stored is None:
            return
        if stored.snapshot is not None and stored.snapshot_seq > after:
            self._gap(doc_id, watch)
            return
        for seq, update in stored.updates:
            if seq > after:
                self._deliver(doc_id, seq, update, self.hub.origin(doc_id, seq))

    def unwatch(self, doc_id: str) -> None:
        self._watches.pop(doc_id, None)

    def position(self, doc_id: str) -> int | None:
        watch = self._watches.get(doc_id)
        return None if watch is None else watch.cursor

    def publish_awareness(self, doc_id: str, payload: bytes) -> None:
        if self._running:
            self.hub._awareness(doc_id, self.node_id, bytes(payload))

    async def nodes(self) -> list[str]:
        return sorted(self.hub._buses)

    def _deliver(self, doc_id: str, seq: int, update: bytes, origin: str | None) -> None:
        asyncio.get_running_loop().call_soon(self._deliver_now, doc_id, seq, update, origin)

    def _deliver_now(self, doc_id: str, seq: int, update: bytes, origin: str | None) -> None:
        watch = self._watches.get(doc_id)
        if watch is None or watch.gapped or seq <= watch.cursor:
            return
        entries = [(seq, update, origin)]
        if seq != watch.cursor + 1:
            # a delivery scheduled before the watch began may come before its catch-up: the
            # updates between come from the log first, in order
            between = self._between(doc_id, watch.cursor, seq)
            if between is None:
                self._gap(doc_id, watch)
                return
            entries = between + entries
        updates = []
        for entry_seq, entry, entry_origin in entries:
            watch.cursor = entry_seq
            if entry_origin != self.node_id:
                updates.append((entry_seq, entry))
        if updates:
            watch.listener.bus_updates(doc_id, updates)

    def _between(
        self, doc_id: str, cursor: int, seq: int
    ) -> list[tuple[int, bytes, str | None]] | None:
        """The log's updates after ``cursor`` and before ``seq``, with their authors;
        ``None`` if one of them is gone from it (compacted away)."""
        stored = self.hub.shared.read(doc_id)
        if stored is None:
            return None
        held = {s: update for s, update in stored.updates}
        if any(s not in held for s in range(cursor + 1, seq)):
            return None
        return [(s, held[s], self.hub.origin(doc_id, s)) for s in range(cursor + 1, seq)]

    def _gap(self, doc_id: str, watch: Watch) -> None:
        watch.gapped = True
        cursor = watch.cursor
        asyncio.get_running_loop().call_soon(watch.listener.bus_gap, doc_id, cursor)

    def _hear(self, doc_id: str, node_id: str, payload: bytes) -> None:
        watch = self._watches.get(doc_id)
        if watch is not None:
            asyncio.get_running_loop().call_soon(
                watch.listener.bus_awareness, doc_id, node_id, payload
            )

    def _gone(self, node_id: str) -> None:
        for watch in list(self._watches.values()):
            asyncio.get_running_loop().call_soon(watch.listener.bus_node_gone, node_id)
