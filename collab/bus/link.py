"""``ClusterLink``: a node's rooms joined to the bus.

Each room, once loaded, watches its document's shared log from the last sequence number the
store held when it loaded (not from its own seed's: another node may have seeded the
document, and been edited, first). The updates other nodes stored reach the room, which
sends them to its peers; a snapshot made here replaces the log only up to the bus's position
(everything before it is in this room's document); a log compacted past the room's position
is loaded again. Unloaded rooms stop watching.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from collab.bus.bus import ASK_AWARENESS, Bus
from collab.live.room import Room
from collab.live.rooms import Rooms
from collab.store.base import Store
from protocol.errors import ErrorCode

__all__ = ["ASK_AWARENESS", "ClusterLink"]

log = logging.getLogger("collab.bus")


class ClusterLink:
    """Subscribes to a ``Rooms`` registry's hooks; needs nothing else of the server."""

    def __init__(
        self,
        rooms: Rooms,
        bus: Bus,
        store: Store,
        *,
        store_reachable: Callable[[], bool] | None = None,
    ) -> None:
        self.rooms = rooms
        self.bus = bus
        self.store = store
        self.store_reachable = store_reachable
        """Whether the shared store answers now; while it does not, rooms send their peers
        updates before they are written (``Room.serve_unwritten``)."""
        self._reloads: set[asyncio.Task[None]] = set()
        rooms.on_room.append(self._loaded)
        rooms.on_unloaded.append(self._unloaded)

    def _loaded(self, room: Room) -> None:
        key = room.key
        room.compact_bound = lambda: self.bus.position(key)
        reachable = self.store_reachable
        if reachable is not None:  # a store that can be cut off (Redis)
            room.serve_unwritten = lambda: not reachable()
        room.on_awareness.append(lambda _room, payload: self.bus.publish_awareness(key, payload))
        self.bus.watch(key, room.loaded_seq, _RoomListener(self, room))
        # the cursors of the other nodes' peers, relayed before this room watched: asked for
        self.bus.publish_awareness(key, ASK_AWARENESS)

    def _unloaded(self, room: Room) -> None:
        if self.rooms.get_key(room.key) in (None, room):
            self.bus.unwatch(room.key)

    def _room(self, doc_id: str, expected: Room) -> Room | None:
        """The room still loaded for ``doc_id``, if it is the one the listener serves."""
        room = self.rooms.get_key(doc_id)
        return room if room is expected and not room.failed else None

    def reload(self, room: Room, listener: _RoomListener) -> None:
        task = asyncio.create_task(self._reload(room, listener), name=f"reload {room.key}")
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    def drop(self, room: Room) -> None:
        """Let go of ``room``, loaded here with no one on it, whose stored history another
        node deleted: it is unloaded without the snapshot an unload stores (or its history
        would come back to a document made again under its name), the store left as the
        deleting node left it."""
        task = asyncio.create_task(
            self.rooms.retire(
                room.key,
                ErrorCode.NOT_FOUND,
                "deleted by another node",
                level=logging.INFO,
                keep_store=True,
            ),
            name=f"drop {room.key}",
        )
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def _reload(self, room: Room, listener: _RoomListener) -> None:
        """Load the document's shared log again, after writing this room's whole state
        into it.

        A gap may mean that the log lost updates (a Redis restarted without its data, or
        back on older files): those this node took, and the other nodes had not read yet,
        are then nowhere but in this room, and every later update of the same clients waits
        for them, unapplied, on the other nodes. Written back (applying what a document has
        already changes nothing), they reach every node; and a document whose log is gone
        goes on in the same history instead of being seeded anew."""
        try:
            if self._room(room.key, room) is not None:
                await self.store.append(room.key, room.doc.get_update())
            stored = await self.store.load(room.key)
        except Exception as exc:
            room.fail(f"the shared log could not be read again: {exc!r}")
            return
        if self._room(room.key, room) is None:
            return
        if stored is None or stored.corrupt is not None:
            room.fail("the shared log lost the document, or part of it: reloading")
            return
        room.catch_up(stored)
        self.bus.watch(room.key, stored.last_seq, listener)


class _RoomListener:
    """The bus's listener for one room (a ``BusListener``)."""

    def __init__(self, link: ClusterLink, room: Room) -> None:
        self.link = link
        self.room = room

    def bus_updates(self, doc_id: str, updates: list[tuple[int, bytes]]) -> None:
        room = self.link._room(doc_id, self.room)
        if room is not None:
            room.receive_remote([update for _seq, update in updates])

    def bus_gap(self, doc_id: str, after: int) -> None:
        room = self.link._room(doc_id, self.room)
        if room is not None:
            log.info("%s: the shared log was compacted past %d; loading it again", doc_id, after)
            self.link.reload(room, self)

    def bus_deleted(self, doc_id: str) -> None:
        room = self.link._room(doc_id, self.room)
        if room is None:
            return
        if room.attached:
            # someone opened it here as it was deleted (the deletion checks the nodes' open
            # documents as of their last beat): its whole state goes back into the log
            log.warning("%s: deleted by another node while open here; writing it back", doc_id)
            self.link.reload(room, self)
        else:
            self.link.drop(room)

    def bus_awareness(self, doc_id: str, node_id: str, payload: bytes) -> None:
        room = self.link._room(doc_id, self.room)
        if room is None:
            return
        if payload == ASK_AWARENESS:  # a node just loaded the document: tell it our peers'
            states = room.local_awareness()
            if states is not None:
                self.link.bus.publish_awareness(doc_id, states)
            return
        room.receive_remote_awareness(node_id, payload)

    def bus_node_gone(self, node_id: str) -> None:
        room = self.link._room(self.room.key, self.room)
        if room is not None:
            room.forget_node(node_id)
