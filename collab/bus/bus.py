"""The ``Bus`` seam: how the nodes of a cluster hear each other's updates and awareness.

A document's updates are appended to a store every node reads (``RedisStore``, or the
in-process hub's store); the bus tells each node, in order, the updates that the *other*
nodes appended to the documents it watches, so it can apply them to its rooms and send them
to its own peers. Watching starts after a sequence number (the last one the room holds), so
a node that was cut off, or a room that just loaded, catches up on what it missed from the
log itself. When the log no longer holds what a watcher missed (it was compacted into a
snapshot meanwhile), the bus says so (``bus_gap``) and the room loads from the store again.

Awareness (cursors, names) is fire-and-forget: it goes to the nodes watching the document
now, and a node that dies takes the states it relayed with it (``bus_node_gone``).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Protocol, runtime_checkable

__all__ = ["Bus", "BusListener", "Watch"]


ASK_AWARENESS = b""
"""An empty awareness message: "send me the states of your peers" (a node that just loaded a
document asks the others, since awareness is not kept anywhere but in the rooms; so does
every node of the documents it watches when a node it took for gone is back)."""


class BusListener(Protocol):
    """What a bus calls for one watched document (a room, in the server)."""

    def bus_updates(self, doc_id: str, updates: list[tuple[int, bytes]]) -> None:
        """Updates other nodes appended, with their sequence numbers, ascending, each once."""
        ...

    def bus_gap(self, doc_id: str, after: int) -> None:
        """Updates after ``after`` are no longer in the log (compacted away before this node
        read them): the document must be loaded from the store again and watched anew.
        Nothing more is delivered for it until then."""
        ...

    def bus_deleted(self, doc_id: str) -> None:
        """Another node deleted the document's stored history on purpose (its branch was
        deleted, its file is no longer text). Nothing more is delivered for it."""
        ...

    def bus_awareness(self, doc_id: str, node_id: str, payload: bytes) -> None:
        """An awareness message relayed by another node."""
        ...

    def bus_node_gone(self, node_id: str) -> None:
        """A node stopped or died: the awareness states it relayed are no longer renewed."""
        ...


@runtime_checkable
class Bus(Protocol):
    """Fan-out between the server processes that share one store."""

    node_id: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    @property
    def healthy(self) -> bool:
        """False while the bus cannot reach its backend: the node serves the peers it holds
        and catches up once it is back."""
        ...

    def watch(self, doc_id: str, after: int, listener: BusListener) -> None:
        """Deliver to ``listener`` the other nodes' updates to ``doc_id`` whose sequence
        numbers are after ``after`` (those already appended included), and their awareness.
        Watching a document again moves its starting point and listener."""
        ...

    def unwatch(self, doc_id: str) -> None:
        """Stop delivering anything for ``doc_id``."""
        ...

    def position(self, doc_id: str) -> int | None:
        """The sequence number up to which every entry of the document's log has reached
        this node (delivered, or appended by it); ``None`` if it is not watched. A snapshot
        made on this node may replace the log up to there and no further."""
        ...

    def publish_awareness(self, doc_id: str, payload: bytes) -> None:
        """Send an awareness message to the other nodes watching ``doc_id`` (dropped while
        the bus is unhealthy)."""
        ...

    def nodes(self) -> Awaitable[list[str]]:
        """The ids of the nodes alive now, this one included, sorted."""
        ...


class Watch:
    """What a bus keeps for one watched document: the last sequence number delivered to (or
    appended by) this node, whom to deliver to, and whether a gap stopped the deliveries
    until the document is watched anew."""

    __slots__ = ("cursor", "gapped", "listener")

    def __init__(self, cursor: int, listener: BusListener) -> None:
        self.cursor = cursor
        self.listener = listener
        self.gapped = False
