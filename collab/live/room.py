"""A room: one live document, its peers, validation, append, broadcast, then durability.

The room never holds a socket. Peers are ``Subscriber`` objects whose ``send_*`` methods
only enqueue; the server shell drains those queues onto sockets.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pycrdt import Doc, Text, get_state, merge_updates

from protocol.errors import ErrorCode, ProtocolError
from protocol.names import DocId
from protocol.text_update import (
    MAX_CLOCK,
    UpdateShape,
    deleted_ranges,
    pairs_in,
    read_text_update,
    splits_a_pair,
)
from protocol.yjs import (
    AwarenessEntry,
    YjsLimits,
    decode_awareness,
    decode_state_vector,
    encode_awareness,
)

from ..server.auth import Identity
from ..store.base import BehindSnapshot, Fence, Store, StoredDoc
from .awareness_clock import relay_clock
from .carets import CARET_KEYS, DROPPED, caret_of
from .colours import COLOUR_KEYS, is_colour
from .epochs import doc_epochs, epochs_in, is_epoch, update_epochs
from .marks import mark_update, marks_in
from .origin import Origin
from .seed import TEXT_NAME

__all__ = ["ChangeListener", "InvalidUpdate", "Room", "RoomFailed", "Subscriber"]

log = logging.getLogger("collab.room")

EMPTY_UPDATE = b"\x00\x00"
HISTORY_FACTOR = 4
"""A document's history, encoded, may reach this many times its text's cap
(``max_document``): room for years of editing, not for text deleted as it is inserted."""
_HISTORY_GROWTH = 2  # at most this many bytes of encoded history per byte of an update
# ... of a delete set alone: each range (two bytes at least) cuts at most two runs in two, and
# each new run is a struct of two ids (nine bytes each at most) and a few bytes more
_DELETION_GROWTH = 32
_PASS_THROUGH = (KeyboardInterrupt, SystemExit, GeneratorExit, asyncio.CancelledError)
_AUTHORED = (Origin.CLIENT, Origin.AI)  # the edits whose writer a commit names
_ID_USERS = 4096  # awareness ids whose holder a room remembers past its table (see _hold_id)
_IDS_PER_USER = 32  # ... of which one person's most recent are kept (others' are not evicted)
_TABLE_SHARE = 8  # one person holds at most 1/this of a room's awareness table (4 at least)


class InvalidUpdate(ProtocolError):
    """The document rejected an update; it was not stored, broadcast or kept."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.INVALID_UPDATE, message)


class Gapped(ProtocolError):
    """The document cannot integrate an update whole yet: it lacks clocks the update
    builds on (see ``Room._check_whole``)."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.RESYNC, message)


PARK_SECONDS = 10.0
"""How long an update that builds on clocks its sender has not sent yet waits for them (an
honest client's reconnect brings them within a round trip: its typing can reach the server
before its answer to the server's sync step 1); then its connection is closed with 4020."""
PARK_UPDATES = 256
PARK_BYTES = 4 * 1024 * 1024
"""At most this many updates, and bytes, wait per sender; one more closes it with 4020."""


@dataclass(slots=True)
class _Parked:
    """A sender's updates waiting for the clocks they build on, in the order they came."""

    timer: asyncio.TimerHandle
    updates: list[tuple[bytes, Origin, bool, asyncio.Future[None]]] = field(default_factory=list)
    size: int = 0


class RoomFailed(ProtocolError):
    """The room can no longer accept updates (its store failed, or the CRDT core panicked)."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.INTERNAL, message)


ChangeListener = Callable[["Room", Origin, "Identity | None"], None]
"""Called, synchronously, after each change is applied to a room's document: the room, the
change's origin, and the authenticated author when there is one."""


class Subscriber(Protocol):
    """One peer's view of one room: a connection (and, on ``/ws``, one document handle)."""

    identity: Identity

    def send_updates(self, updates: list[bytes]) -> None:
        """Send these updates, in order. A broadcast hands the very same list object to
        every peer that gets all of them, so that it can be encoded once."""
        ...

    def send_awareness(self, payload: bytes) -> None: ...

    def abort(self, code: ErrorCode, reason: str) -> None: ...


@dataclass(slots=True)
class _AwarenessState:
    clock: int  # the client's own clock, which orders its entries
    state: dict[str, object] | None
    owner: Subscriber | None
    relayed: int = 0  # the clock the entry was last relayed with (see .awareness_clock)
    node: str | None = None  # the node that relayed it (None: one of this node's peers)
    user: str | None = None  # who held it last: no one else may take it over


@dataclass(slots=True)
class _Pending:
    update: bytes
    origin: Origin
    sender: Subscriber | None
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    sent: bool = False  # broadcast before it was written (see Room.serve_unwritten)
    fence: Fence | None = None  # the lease a server-side edit is made under (a cluster's)
    author: str | None = None  # the person who wrote it (kept by a store a cluster shares)


class Room:
    """A live document, created once its history is loaded.

    Each accepted update is handed to the store at the end of the event loop's turn, without
    waiting for the updates before it to be stored; batches are broadcast in the order they
    were accepted, each once it and every batch before it are written to the store (they
    survive the server process dying), and their futures complete once the store has made
    them durable (fsynced). A slow disk delays the futures, not the broadcasts.
    """

    def __init__(
        self,
        doc_id: DocId,
        doc: Doc[Any],
        store: Store,
        *,
        last_seq: int,
        compact_every: int = 1000,
        max_awareness: int = 256,
        limits: YjsLimits | None = None,
        max_document: int = 0,
    ) -> None:
        self.doc_id = doc_id
        self.key = str(doc_id)
        self.doc = doc
        self.text = doc.get(TEXT_NAME, type=Text)
        self.store = store
        self.last_seq = last_seq
        self.updates_since_snapshot = 0
        self.bytes_since_snapshot = 0  # stored update bytes that the last snapshot lacks
        self.snapshot_bytes = 0  # size of the last snapshot (0: none)
        self.compact_every = compact_every
        self.max_awareness = max_awareness
        self.limits = limits or YjsLimits()
        self.epochs = doc_epochs(doc)  # see collab.live.epochs
        # the clock of each character past U+FFFF's first UTF-16 unit, by client (see
        # protocol.text_update.splits_a_pair); empty for most files
        self._pairs: dict[int, set[int]] = {}
        encoded = doc.get_update()
        if _ASTRAL.search(str(self.text)):  # (a document's state holds no deleted text)
            self._note_pairs(pairs_in(encoded, TEXT_NAME))
        self.max_document = max_document  # cap on the text's UTF-8 bytes (0: none)
        # an upper bound of the text's size: an update adds at most its own length
        self._size_bound = len(self.text)
        # an upper bound of the size of the document's history, encoded (see _history_after)
        self._history_bound = len(encoded)
        # each client's clock, as last read or as this room's own checks advanced it (never
        # past the document's; see _check_whole)
        self._clocks: dict[int, int] = {}
        # who held each awareness id, kept when its entry leaves a full table (see _id_user)
        self._id_users: collections.OrderedDict[int, str] = collections.OrderedDict()
        self._ids_of: dict[str, collections.OrderedDict[int, None]] = {}  # the same, by person
        self.recovered = False  # loaded from a history repaired after damage
        # loaded from a history that lacks part of what its branch committed (the state vector
        # it must cover again before it is committed; see Rooms._lost_history)
        self.lacking: bytes | None = None
        self.retired = False  # closed for good (its file is no longer text): never committed
        self.attached: set[Subscriber] = set()  # lifecycle: everyone who opened the room
        self.peers: set[Subscriber] = set()  # broadcast set: handshake completed
        self.awareness_ids: dict[Subscriber, int] = {}
        self._awareness: dict[int, _AwarenessState] = {}
        self._parked: dict[Subscriber, _Parked] = {}  # updates waiting for their clocks
        # accepted, not yet handed to the store; a flush is scheduled while it is not empty
        self._queue: list[_Pending] = []
        # handed to the store, oldest first: each batch is broadcast once it and every
        # batch before it are stored
        self._stored: collections.deque[tuple[list[_Pending], asyncio.Future[Any]]] = (
            collections.deque()
        )
        self._syncing: set[asyncio.Future[None]] = set()  # written and broadcast, not yet durable
        self._compaction: asyncio.Task[None] | None = None
        self._failed: str | None = None
        self._store_failed: str | None = None  # once an append fails, nothing more is stored
        self.listeners: list[ChangeListener] = []
        # in a cluster: the last sequence number up to which this room holds every update of
        # the shared log (the bus's position), the bound of what a snapshot may replace;
        # None while the room does not follow the log (the bus stopped): no snapshot then
        self.compact_bound: Callable[[], int | None] | None = None
        # in a cluster: told each awareness message this room relays for its own peers
        self.on_awareness: list[Callable[[Room, bytes], None]] = []
        # in a cluster: true while the shared store cannot be reached; updates are then sent
        # to this node's peers before they are written, so they keep working together
        self.serve_unwritten: Callable[[], bool] | None = None
        self.loaded_seq = 0  # the last sequence number the store held when the room loaded
        # set by the registry that owns the room (``Rooms``), which hands them on to its hooks
        self.on_idle: Callable[[Room], None] | None = None
        self.on_leave: Callable[[Room, Subscriber], None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def stop(self) -> None:
        """Persist everything queued and finish a compaction under way."""
        await self.drain()
        if self._compaction is not None:
            await asyncio.gather(self._compaction, return_exceptions=True)

    @property
    def failed(self) -> bool:
        return self._failed is not None

    async def drain(self) -> None:
        """Wait until every update accepted so far is durable and broadcast."""
        waiting = [p.done for p in self._queue]
        for batch, _stored in self._stored:
            waiting += [p.done for p in batch]
        waiting += self._syncing
        if waiting:  # (shielded: a waiter cancelled must not cancel the updates' futures)
            await asyncio.shield(asyncio.gather(*waiting, return_exceptions=True))

    def attach(self, peer: Subscriber) -> None:
        self.attached.add(peer)

    def detach(self, peer: Subscriber) -> None:
        if peer in self.attached and self.on_leave is not None:
            self.on_leave(self, peer)
        self._drop_parked(peer)
        self.attached.discard(peer)
        self.peers.discard(peer)
        client_id = self.awareness_ids.pop(peer, None)
        if client_id is not None:
            entry = self._awareness.get(client_id)
            if entry is not None and entry.owner is peer:
                # removed at the same clock, as Yjs does, so that the client's next state
                # (it renews with a higher clock when it reconnects) is accepted everywhere
                entry.state = None
                entry.owner = None
                entry.relayed = relay_clock(entry.relayed)
                removed = [AwarenessEntry(client_id, entry.relayed, None)]
                self._broadcast_awareness(removed, None)
                self._tell_awareness(removed)
        if not self.attached and self.on_idle is not None:
            self.on_idle(self)

    # -- sync --------------------------------------------------------------------------------

    def state_vector(self) -> bytes:
        return self.doc.get_state()

    def handshake(self, peer: Subscriber, state_vector: bytes) -> bytes:
        """Answer a peer's sync step 1 and add it to the broadcast set, atomically.

        The returned step 2 holds everything the peer lacks; every later update reaches it
        by broadcast, so nothing falls between the two. A peer whose state belongs to another
        epoch of the document is refused with ``RELOAD`` (see :mod:`collab.live.epochs`).

        A copy's state vector names the clients the document has (those it has received of
        them), and those that typed in it and have not sent it yet: one longer than the
        document's own by more than ``limits.max_state_vector`` is no copy of it, and is
        refused with ``TOO_LARGE`` before it is read. A document's own grows with the
        clients that ever wrote in it, so a client that holds one named by thousands is
        never refused for it; and what the server reads of a peer is bounded by what it
        holds.
        """
        own = len(self.doc.get_state())
        bound = own + self.limits.max_state_vector
        if len(state_vector) > bound:
            raise ProtocolError(
                ErrorCode.TOO_LARGE,
                f"state vector of {len(state_vector)} bytes, over the document's own ({own} "
                f"bytes) by more than {self.limits.max_state_vector}",
            )
        foreign = epochs_in(state_vector, YjsLimits(max_state_vector=bound)) - self.epochs
        if foreign:
            raise self._reload(peer, foreign)
        try:
            diff = self.doc.get_update(state_vector)
        except BaseException as exc:
            if isinstance(exc, _PASS_THROUGH):
                raise
            raise ProtocolError(ErrorCode.MALFORMED, f"invalid state vector: {exc}") from None
        if peer in self.attached and peer not in self.peers:
            self.peers.add(peer)
            states = self.awareness_entries()
            if states:
                peer.send_awareness(encode_awareness(states))
        return diff

    def _check_answer(self, peer: Subscriber, update: bytes) -> None:
        """Refuse, with ``RELOAD``, a peer's answer to sync step 1 that carries the history of
        another epoch of the document (merged, it would double the text)."""
        try:
            epochs = update_epochs(update)
        except BaseException as exc:
            if isinstance(exc, _PASS_THROUGH):
                raise
            raise InvalidUpdate(f"update rejected: {type(exc).__name__}: {exc}") from None
        foreign = epochs - self.epochs
        if foreign:
            raise self._reload(peer, foreign)

    def _reload(self, peer: Subscriber, foreign: frozenset[int]) -> ProtocolError:
        log.warning(
            "%s: %s holds another epoch of the document (%s); told to reload",
            self.key,
            peer.identity.user,
            ", ".join(f"{epoch:x}" for epoch in sorted(foreign)),
        )
        return ProtocolError(
            ErrorCode.RELOAD,
            "the document's history was reset (a new epoch): discard this copy and open the "
            "document again",
        )

    def receive_update(
        self,
        update: bytes,
        *,
        origin: Origin = Origin.CLIENT,
        sender: Subscriber | None = None,
        answer: bool = False,
    ) -> asyncio.Future[None]:
        """Validate and apply ``update``, queue it for a durable append, and return a future
        that completes once it is stored and broadcast. Raises ``InvalidUpdate``.

        ``answer``: the update is the sender's answer to sync step 1 (its whole history that
        the room lacks), refused with ``RELOAD`` if it belongs to another epoch.

        An update of a ``sender`` that builds on clocks the document lacks waits for them
        (see :data:`PARK_SECONDS`): it is applied once an update of the same sender brings
        them, and its future completes then.

        An empty update (a client's answer to sync step 1 when it has nothing the room
        lacks) changes nothing: it is neither stored nor broadcast, nor marks the document
        changed."""
        if update == EMPTY_UPDATE and self._failed is None:
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        try:
            done = self._receive(update, origin, sender, answer)
        except Gapped as gap:
            if sender is None:
                raise
            return self._park(sender, update, origin, answer, gap)
        if sender is not None and sender in self._parked:
            self._unpark(sender)
        return done

    def _park(
        self, sender: Subscriber, update: bytes, origin: Origin, answer: bool, gap: Gapped
    ) -> asyncio.Future[None]:
        parked = self._parked.get(sender)
        if parked is None:
            loop = asyncio.get_running_loop()
            timer = loop.call_later(PARK_SECONDS, self._park_expired, sender, gap.message)
            parked = self._parked[sender] = _Parked(timer)
        if len(parked.updates) >= PARK_UPDATES or parked.size + len(update) > PARK_BYTES:
            self._drop_parked(sender)
            raise gap
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        parked.updates.append((update, origin, answer, future))
        parked.size += len(update)
        return future

    def _unpark(self, sender: Subscriber) -> None:
        """Apply what ``sender``'s waiting updates need is here for now, in order."""
        parked = self._parked[sender]
        progress = True
        while progress and parked.updates:
            progress = False
            for item in list(parked.updates):
                update, origin, answer, future = item
                try:
                    done = self._receive(update, origin, sender, answer)
                except Gapped:
                    continue
                except ProtocolError as exc:
                    self._drop_parked(sender)
                    sender.abort(exc.code, exc.message)
                    return
                parked.updates.remove(item)
                parked.size -= len(update)
                _chain(done, future)
                progress = True
        if not parked.updates:
            parked.timer.cancel()
            del self._parked[sender]

    def _park_expired(self, sender: Subscriber, reason: str) -> None:
        if self._parked.get(sender) is None:
            return
        self._drop_parked(sender)
        sender.abort(ErrorCode.RESYNC, f"{reason} (waited {PARK_SECONDS:g} s)")

    def _drop_parked(self, sender: Subscriber) -> None:
        """Forget ``sender``'s waiting updates (never applied: not acknowledged either)."""
        parked = self._parked.pop(sender, None)
        if parked is None:
            return
        parked.timer.cancel()
        for _update, _origin, _answer, future in parked.updates:
            if not future.done():
                future.cancel()

    def _receive(
        self, update: bytes, origin: Origin, sender: Subscriber | None, answer: bool
    ) -> asyncio.Future[None]:
        if self._failed is not None:
            raise RoomFailed(self._failed)
        if len(update) > self.limits.max_update:
            raise ProtocolError(ErrorCode.TOO_LARGE, f"update of {len(update)} bytes over limit")
        shape = read_text_update(update, TEXT_NAME)
        self._check_cost(update, shape)
        size_bound = self._size_after(update, shape)
        history_bound = self._history_after(update, shape)
        self._check_whole(shape)
        held = {client: self._clocks.get(client, 0) for client in shape.clients}
        # a section that starts at clocks the document has is cut where they end: the
        # text goes on from there, and the cut must not fall inside a character either
        cuts = [
            (client, held[client] - 1)
            for client in shape.clients
            if shape.starts[client] < held[client] < shape.ends[client]
        ]
        if self._pairs or shape.pairs:
            split = splits_a_pair([*shape.bounds, *cuts], self._pairs, shape.pairs)
            if split is not None:
                raise InvalidUpdate(
                    f"update rejected: it places text or ends a deletion inside a character "
                    f"(between the two UTF-16 units of a character past U+FFFF: client "
                    f"{split[0]}, clock {split[1]})"
                )
        clients = shape.clients
        _precheck(update, shape)
        if answer and sender is not None:
            self._check_answer(sender, update)
        unknown = {client for client in clients if is_epoch(client)} - self.epochs
        if unknown:  # only the engine writes as an epoch's client, and only when it seeds
            raise InvalidUpdate(
                f"update rejected: it writes as client {min(unknown)}, an epoch of another "
                "history of the document"
            )
        try:
            self.doc.apply_update(update)
        except BaseException as exc:
            if isinstance(exc, _PASS_THROUGH):
                raise
            if not isinstance(exc, Exception):  # a Rust panic: the document may be damaged
                self._check_health(exc, sender)
            raise InvalidUpdate(f"update rejected: {type(exc).__name__}: {exc}") from None
        self._size_bound = size_bound
        self._history_bound = history_bound
        for client in shape.clients:  # integrated whole (see _check_whole): its clocks known
            if shape.ends[client] > self._clocks.get(client, 0):
                self._clocks[client] = shape.ends[client]
        self._note_pairs(  # (of the clocks the document had, its own text's pairs count)
            {
                client: [clock for clock in clocks if clock >= held.get(client, 0)]
                for client, clocks in shape.pairs.items()
            }
        )
        pending = _Pending(update, origin, sender)
        if sender is not None and origin in _AUTHORED:
            pending.author = sender.identity.user
        self._enqueue(pending)
        self._notify(origin, getattr(sender, "identity", None))
        return pending.done

    def receive_remote(self, updates: list[bytes]) -> None:
        """Apply updates another node accepted and stored in the shared log (delivered by
        the bus, in order, each once), and send them to this node's peers at once: they are
        stored already. An update this node cannot apply fails the room (it reloads)."""
        if self._failed is not None or not updates:
            return
        for update in updates:
            try:
                self.doc.apply_update(update)
                added = update_epochs(update)  # its own clients only: the document may have many
            except BaseException as exc:
                if isinstance(exc, _PASS_THROUGH):
                    raise
                self.fail(f"an update from the shared log could not be applied: {exc!r}")
                return
            self._size_bound += len(update)
            self._history_bound += _history_growth(update)
            self._note_pairs(pairs_in(update, TEXT_NAME))
            if not added <= self.epochs:  # another node seeded anew (rare)
                self.epochs = doc_epochs(self.doc)
        for peer in list(self.peers):
            peer.send_updates(updates)
        self.updates_since_snapshot += len(updates)
        self.bytes_since_snapshot += sum(len(u) for u in updates)
        self._notify(Origin.BUS, None)

    def catch_up(self, stored: StoredDoc) -> None:
        """Apply a history loaded again from the shared log (the bus lost its place there:
        the updates this room missed were compacted into a snapshot) and send this node's
        peers what it adds."""
        before = self.doc.get_state()
        scratch: Doc[Any] = Doc()
        stored.apply_to(scratch)
        added = scratch.get_update(before)
        self.receive_remote([added])
        self.last_seq = max(self.last_seq, stored.last_seq)

    def _check_whole(self, shape: UpdateShape) -> None:
        """Refuse (``RESYNC``) an update the document cannot integrate whole: structs of a
        client that start, or go on after skipped clocks, past the clocks the document holds
        of it; an item placed by a clock of another client that neither the document nor
        the update holds; a deletion of clocks not written yet. The CRDT would keep such
        structs pending, and what pending structs become differs between Yjs and the Rust
        core under pycrdt (the texts would differ for good); a pending deletion would delete
        its client's next edits as they came, after they were stored and acknowledged; some
        mixes leave the core's state damaged. An honest client that sends one lost an
        update on the way (or has text from another path, a tab beside it): its reconnect's
        sync step 2 brings what the server lacks, and its typing can come first (see
        :meth:`receive_update`: it waits)."""
        problem = self._gap(shape)
        if problem is None:
            return
        state = self.doc.get_state()  # clocks only grow: read again before refusing
        self._clocks = decode_state_vector(state, YjsLimits(max_state_vector=len(state) + 16))
        problem = self._gap(shape)
        if problem is not None:  # (an honest client lost an update on the way: it resyncs)
            raise Gapped(f"update rejected: {problem}: reconnect and sync")

    def _check_cost(self, update: bytes, shape: UpdateShape) -> None:
        """Refuse (``TOO_LARGE``) an update whose integration would hold the event loop:
        the CRDT core's work is super-linear in the clients an update brings that the
        document does not know (each new item of a higher client id placed where others
        were placed walks past all of them) and in the ranges its delete set cuts out of
        text the document has not deleted (see ``YjsLimits``)."""
        new = self._new_clients(shape)
        if new > self.limits.max_new_clients > 0:
            raise ProtocolError(
                ErrorCode.TOO_LARGE,
                f"update rejected: it writes as {new} clients the document does not know, "
                f"over the limit of {self.limits.max_new_clients}",
            )
        limit = self.limits.max_deleted_ranges
        if shape.ranges <= limit or not limit:
            return
        limit = max(limit, DELETE_WORK // max(len(self.text), 1))
        cuts = self._new_deletions(update, shape, limit)
        if cuts > limit:
            raise ProtocolError(
                ErrorCode.TOO_LARGE,
                f"update rejected: it deletes {cuts} ranges the document has not deleted, "
                f"over the limit of {limit} for a text of {len(self.text)} characters",
            )

    def _new_clients(self, shape: UpdateShape) -> int:
        """How many of ``shape``'s clients the document does not know (its clocks are read
        again only when those last read do not know enough of them)."""
        new = sum(1 for client in shape.clients if client not in self._clocks)
        if new <= self.limits.max_new_clients or not self.limits.max_new_clients:
            return new
        state = self.doc.get_state()
        self._clocks = decode_state_vector(state, YjsLimits(max_state_vector=len(state) + 16))
        return sum(1 for client in shape.clients if client not in self._clocks)

    def _new_deletions(self, update: bytes, shape: UpdateShape, limit: int) -> int:
        """How many of the ranges ``shape``'s delete set holds are not deleted in the
        document already (a range partly deleted counts), counted up to one past ``limit``
        (for a delete set of more ranges than ``limit``)."""
        if shape.ranges <= limit:
            return shape.ranges
        held = self.doc.get_update(self.doc.get_state())  # its delete set alone
        deleted: dict[int, list[tuple[int, int]]] = {}
        for client, start, end in deleted_ranges(held, read_text_update(held, TEXT_NAME)):
            deleted.setdefault(client, []).append((start, end))
        new = 0
        for client, start, end in deleted_ranges(update, shape):
            if not _covered(deleted.get(client, []), start, end):
                new += 1
                if new > limit:
                    break
        return new

    def _gap(self, shape: UpdateShape) -> str | None:
        """What ``shape`` needs that the document lacks, as last read (see
        :meth:`_check_whole`), if anything."""
        clocks = self._clocks
        for client in shape.clients:
            start = shape.starts[client]
            if start > clocks.get(client, 0):
                return (
                    f"its structs of client {client} start at clock {start}, past the "
                    f"{clocks.get(client, 0)} the server has"
                )
        for client, clock in shape.resumes.items():
            if clock > clocks.get(client, 0):
                return (
                    f"its structs of client {client} skip clocks up to {clock}, past the "
                    f"{clocks.get(client, 0)} the server has"
                )
        for client, clock in shape.origins:
            if clock >= self._written(client, shape):
                return f"it places text by clock {clock} of client {client}, which the server lacks"
        for client, end in shape.deleted.items():
            written = self._written(client, shape)
            if end > written:
                return (
                    f"it deletes clocks of client {client} up to {end}, of which the server "
                    f"has {written}"
                )
        return None

    def _note_pairs(self, pairs: dict[int, list[int]]) -> None:
        """Keep the clocks of the pairs of an applied update (see ``pairs_in``)."""
        for client, firsts in pairs.items():
            self._pairs.setdefault(client, set()).update(firsts)

    def _written(self, client: int, shape: UpdateShape) -> int:
        """How many clocks ``client`` has written, as last read, with ``shape``'s section of
        it if that joins on (see :meth:`_check_whole`)."""
        have = self._clocks.get(client, 0)
        start = shape.starts.get(client)
        return max(have, shape.ends[client]) if start is not None and start <= have else have

    def _size_after(self, update: bytes, shape: UpdateShape) -> int:
        """An upper bound of the text's size once ``update`` (read as ``shape``) is applied;
        raises ``DOCUMENT_FULL`` if it could take the text past ``max_document``.

        An update cannot insert more bytes of text than it holds, so the bound grows by its
        length; the text is measured only once the bound reaches the cap. An update that is
        a delete set and nothing else (no section of structs; read whole, no byte after it)
        is always let through, so that a full document can be made smaller."""
        if not self.max_document or not shape.starts:
            return self._size_bound
        bound = self._size_bound + len(update)
        if bound > self.max_document:
            bound = len(self.text) + len(update)
            if bound > self.max_document:
                raise ProtocolError(
                    ErrorCode.DOCUMENT_FULL,
                    f"the document would grow past its cap of {self.max_document} bytes",
                )
        return bound

    def _history_after(self, update: bytes, shape: UpdateShape) -> int:
        """An upper bound of the size of the document's history (its whole state, encoded)
        once ``update`` (read as ``shape``) is applied; raises ``DOCUMENT_FULL`` if it could
        pass :data:`HISTORY_FACTOR` times ``max_document``.

        Deleted text stays in a CRDT's history (each deleted run, a few bytes), and its
        memory with it: updates that insert text already deleted, one run apart from the
        next, grow a document without a byte of text to count against its cap. An update
        adds at most :data:`_HISTORY_GROWTH` times its length to the encoded history (its
        items, and the runs they split in two); the history is measured only once the bound
        reaches the cap. A delete set alone passes, as for the text's cap, and the bound
        grows by what it may add (:data:`_DELETION_GROWTH`): it splits the runs it cuts,
        and the history is measured sooner after it."""
        if not self.max_document:
            return self._history_bound
        if not shape.starts:
            return self._history_bound + _DELETION_GROWTH * len(update)
        cap = HISTORY_FACTOR * self.max_document
        bound = self._history_bound + _HISTORY_GROWTH * len(update)
        if bound > cap:
            bound = len(self.doc.get_update()) + _HISTORY_GROWTH * len(update)
            if bound > cap:
                raise ProtocolError(
                    ErrorCode.DOCUMENT_FULL,
                    f"the document's history would grow past its cap of {cap} bytes",
                )
        return bound

    def edit(
        self,
        change: Callable[[Text], None],
        *,
        origin: Origin,
        author: Identity | None = None,
        mark: int | None = None,
        fence: Fence | None = None,
    ) -> asyncio.Future[None]:
        """Change the text on the server's side (a merge, a push, an accepted completion).

        ``change`` runs in one transaction on the room's document; the resulting update is
        stored and broadcast like a client's. Returns a future done once it is durable.

        A ``mark`` (see :mod:`collab.live.marks`) goes into the same update, stored with
        the change or not at all, even when the change changes nothing. A ``fence``: the
        branch's lease the change is made under (in a cluster); if this node no longer
        holds it when the update reaches the shared store, the update is refused there
        (``FenceLost``: the node holding the lease makes the change) and the room, which
        applied it, reloads."""
        if self._failed is not None:
            raise RoomFailed(self._failed)
        captured: list[bytes] = []
        subscription = self.doc.observe(lambda event: captured.append(event.update))
        try:
            with self.doc.transaction(origin=str(origin)):
                change(self.text)
            if mark is not None and not self.has_mark(mark):
                with self.doc.transaction(origin=str(origin)):
                    self.doc.apply_update(mark_update(self.doc, mark))
        finally:
            self.doc.unobserve(subscription)
        captured = [update for update in captured if update != EMPTY_UPDATE]
        if not captured:
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        update = captured[0] if len(captured) == 1 else merge_updates(*captured)
        self._size_bound += len(update)
        self._history_bound += _history_growth(update)
        self._note_pairs(pairs_in(update, TEXT_NAME))
        pending = _Pending(update, origin, None, fence=fence)
        if author is not None and origin in _AUTHORED:
            pending.author = author.user
        self._enqueue(pending)
        self._notify(origin, author)
        return pending.done

    def has_mark(self, mark: int) -> bool:
        """Whether the document's history holds ``mark`` (a merge it has had)."""
        state = self.doc.get_state()
        return mark in marks_in(state, YjsLimits(max_state_vector=len(state) + 16))

    def _notify(self, origin: Origin, author: Identity | None) -> None:
        for listener in self.listeners:
            try:
                listener(self, origin, author)
            except Exception:
                log.exception("%s: change listener failed", self.key)

    def _check_health(self, exc: BaseException, sender: Subscriber | None) -> None:
        log.error("%s: CRDT core panicked on an update: %s", self.key, exc)
        try:
            self.doc.get_update()
        except BaseException as again:
            if isinstance(again, _PASS_THROUGH):
                raise
            self.fail(f"document damaged by a panic: {again}", spare=sender)

    def fail(self, reason: str, *, spare: Subscriber | None = None) -> None:
        """Stop accepting updates and disconnect everyone (but ``spare``, whose caller closes
        it with its own code); they reconnect to a room reloaded from the store."""
        if self._failed is not None:
            return
        self._failed = reason
        log.error("%s: room failed: %s", self.key, reason)
        for peer in list(self.attached):
            if peer is not spare:
                peer.abort(ErrorCode.INTERNAL, "document reloading, reconnect")

    # -- durable append, then broadcast ----------------------------------------------------

    def _enqueue(self, pending: _Pending) -> None:
        if not self._queue:  # what arrives in this turn of the loop goes to the store together
            asyncio.get_running_loop().call_soon(self._flush)
        self._queue.append(pending)

    def _flush(self) -> None:
        """Hand the queued updates to the store, without waiting for the batches before
        them: the store commits them in order, and they are broadcast in order."""
        batch, self._queue = self._queue, []
        if self._store_failed is not None:
            _settle(batch, RoomFailed(self._store_failed))
            return
        try:
            if len(batch) == 1:  # the usual case (a store that returns a future: no task)
                stored: asyncio.Future[Any] = asyncio.ensure_future(self._append(batch[0]))
            else:  # committed together by the store
                stored = asyncio.gather(*(self._append(p) for p in batch))
        except Exception as exc:  # the store refused at once (it is stopped)
            stored = _failed_future(exc)
        self._stored.append((batch, stored))
        stored.add_done_callback(self._on_stored)
        if not stored.done() and self.serve_unwritten is not None and self.serve_unwritten():
            # the shared store cannot be reached: this node's peers still get each other's
            # edits now; the acknowledgements wait for the write as always
            self._broadcast_updates(batch)
            for pending in batch:
                pending.sent = True

    def _append(self, pending: _Pending) -> Awaitable[int]:
        return self.store.append(
            self.key, pending.update, fence=pending.fence, author=pending.author
        )

    def send_unwritten(self) -> None:
        """Send this node's peers every accepted update still waiting for the store (the
        shared store was just found unreachable); each is sent once."""
        waiting = [p for batch, stored in self._stored if not stored.done() for p in batch]
        unsent = [pending for pending in waiting if not pending.sent]
        if unsent:
            self._broadcast_updates(unsent)
            for pending in unsent:
                pending.sent = True

    def _on_stored(self, _done: asyncio.Future[Any]) -> None:
        """Broadcast every batch that is stored and has no unstored batch before it.

        The batches one store commit wrote are broadcast together: a peer gets them in one
        write."""
        ready: list[_Pending] = []
        while self._stored and self._stored[0][1].done():
            batch, stored = self._stored.popleft()
            exc = _error_of(stored, "store append")
            if exc is not None and self._store_failed is None:
                self._publish(ready)  # what was stored before the failure still goes out
                ready = []
                self._fail_store(f"store append failed: {exc!r}")
            if self._store_failed is not None:  # later batches are not broadcast either
                _settle(batch, RoomFailed(self._store_failed))
                continue
            result = stored.result()
            seqs: list[int] = result if isinstance(result, list) else [result]
            self.last_seq = max(self.last_seq, *seqs)
            self.updates_since_snapshot += len(batch)
            self.bytes_since_snapshot += sum(len(pending.update) for pending in batch)
            ready += batch
        self._publish(ready)
        if self._compaction_due() and self._failed is None and self._compaction is None:
            self._compaction = asyncio.create_task(
                self._compact_in_background(), name=f"compact {self.key}"
            )

    def _compaction_due(self) -> bool:
        """A snapshot is due once ``compact_every`` updates and at least as many bytes as the
        last snapshot have been stored after it.

        Encoding a snapshot costs time in proportion to the document's size, on the event
        loop, so snapshots grow rarer as the document grows: their cost per stored byte stays
        constant, and a load replays a snapshot and at most about as many bytes of updates."""
        return (
            self.updates_since_snapshot >= self.compact_every
            and self.bytes_since_snapshot >= self.snapshot_bytes
        )

    async def _compact_in_background(self) -> None:
        try:
            await self._snapshot()
        except Exception:
            log.exception("%s: compaction failed; the history stays as updates", self.key)
        finally:
            self._compaction = None

    async def compact(self) -> None:
        """Replace the stored history up to the last durable update with one snapshot (after
        the compaction already under way, if there is one)."""
        if self._compaction is not None:
            await asyncio.gather(self._compaction, return_exceptions=True)
        await self._snapshot()

    async def _snapshot(self) -> None:
        """Store the document's state as a snapshot through the last durable update.

        The snapshot may hold updates accepted after that one, still on their way to the
        store: they are stored after it with higher sequence numbers, and applying an update
        a document already has changes nothing.

        In a cluster the bound is this node's position in the shared log: none while the
        room does not follow it (no snapshot then), and a snapshot another node stored
        further along makes this one needless (it is skipped)."""
        through = self.last_seq if self.compact_bound is None else self.compact_bound()
        if through is None:
            log.info("%s: not following the shared log; no snapshot made", self.key)
            return
        counted, counted_bytes = self.updates_since_snapshot, self.bytes_since_snapshot
        snapshot = self.doc.get_update()
        try:
            await self.store.compact(self.key, snapshot, through)
        except BehindSnapshot as exc:
            if self.compact_bound is None:  # a single node's own history: a real mistake
                raise
            log.info("%s: a snapshot further along is stored already (%s)", self.key, exc)
        self.updates_since_snapshot = max(0, self.updates_since_snapshot - counted)
        self.bytes_since_snapshot = max(0, self.bytes_since_snapshot - counted_bytes)
        self.snapshot_bytes = len(snapshot)

    def _publish(self, stored: list[_Pending]) -> None:
        """Broadcast written updates; their futures complete once they are durable."""
        if not stored:
            return
        unsent = [pending for pending in stored if not pending.sent]
        if unsent:
            self._broadcast_updates(unsent)
        try:
            durable: asyncio.Future[None] = asyncio.ensure_future(self.store.sync())
        except Exception as exc:  # the store refused at once (it is stopped)
            durable = _failed_future(exc)
        self._syncing.add(durable)
        durable.add_done_callback(lambda done: self._on_durable(stored, done))

    def _on_durable(self, batch: list[_Pending], durable: asyncio.Future[None]) -> None:
        self._syncing.discard(durable)
        exc = _error_of(durable, "store sync")
        if exc is None:
            _settle(batch, None)
            return
        reason = self._store_failed
        if reason is None:
            # What was written may not survive a power loss: stop, and let the clients, who
            # hold every update, bring it back to a room reloaded from the store.
            reason = f"store sync failed: {exc!r}"
            self._fail_store(reason)
        _settle(batch, RoomFailed(reason))

    def _fail_store(self, reason: str) -> None:
        """Store nothing more, and fail the room (its peers reconnect to a reloaded one)."""
        self._store_failed = reason
        self.fail(reason)

    def _broadcast_updates(self, batch: list[_Pending]) -> None:
        """Send stored updates to every peer, in order, each peer's own updates left out
        (one call per peer: a peer that keeps up gets one write).

        The peers that get all of them come first, handed one list, so that its frames are
        built once; then each sender, with a list of its own."""
        updates = [p.update for p in batch]
        senders = {p.sender for p in batch}
        peers = list(self.peers)
        for peer in peers:
            if peer not in senders:
                peer.send_updates(updates)
        for peer in peers:
            if peer in senders:
                others = [p.update for p in batch if p.sender is not peer]
                if others:
                    peer.send_updates(others)

    # -- awareness ---------------------------------------------------------------------------

    def receive_awareness(self, peer: Subscriber, payload: bytes) -> None:
        """Relay a peer's awareness update: its own client id only, its name stamped (a
        state over ``limits.max_awareness_state`` is dropped, as one of another id is)."""
        oversize: list[tuple[int, int]] = []
        entries = decode_awareness(payload, self.limits, oversize=oversize)
        for client_id, size in oversize:
            log.debug(
                "%s: dropped an awareness state of %d bytes (over %d) for id %d from %s",
                self.key,
                size,
                self.limits.max_awareness_state,
                client_id,
                peer.identity.user,
            )
        accepted = []
        for entry in entries:
            current = self._awareness.get(entry.client_id)
            own = self.awareness_ids.get(peer)
            if own is None:
                # Stock y-websocket clients re-send every awareness change they receive, so a
                # connection's first entry may be an echo of someone else's: it claims an id
                # only with a state of its own, for an id no other connection owns, and that
                # no one else held (a page that reconnects takes its own id again).
                owned = (
                    current is not None and current.owner not in (None, peer)
                ) or self._id_user(entry.client_id) not in (None, peer.identity.user)
                if entry.state is None or owned:
                    continue
                own = self.awareness_ids[peer] = entry.client_id
            if entry.client_id != own:
                log.debug("%s: dropped awareness for foreign id %d", self.key, entry.client_id)
                continue
            if not self._room_for(current, peer.identity.user):
                log.warning("%s: awareness table full, dropped client %d", self.key, own)
                continue
            if current is not None and (
                entry.clock < current.clock
                or (
                    entry.clock == current.clock
                    and (entry.state is None) == (current.state is None)
                )
            ):
                # not newer. Yjs' rule lets a removal reuse the current clock; and a client
                # that reconnects re-sends its state with the clock its removal had
                continue
            state = _stamp(entry.state, peer.identity)
            self._hold_id(own, peer.identity.user)
            relayed = relay_clock(current.relayed if current is not None else 0)
            self._awareness[own] = _AwarenessState(
                entry.clock, state, peer if state else None, relayed, user=peer.identity.user
            )
            accepted.append(AwarenessEntry(own, relayed, state))
        if accepted:
            self._broadcast_awareness(accepted, peer)
            self._tell_awareness(accepted)

    def _tell_awareness(self, entries: list[AwarenessEntry]) -> None:
        if self.on_awareness:
            payload = encode_awareness(entries)
            for hook in self.on_awareness:
                try:
                    hook(self, payload)
                except Exception:
                    log.exception("%s: awareness hook failed", self.key)

    def receive_remote_awareness(self, node_id: str, payload: bytes) -> None:
        """Relay to this node's peers the awareness entries another node relayed (stamped
        there). An id one of this node's own peers holds is not taken over."""
        try:
            entries = decode_awareness(payload, self.limits)
        except ProtocolError:
            log.warning("%s: dropped a malformed awareness message from node %s", self.key, node_id)
            return
        accepted = []
        for entry in entries:
            current = self._awareness.get(entry.client_id)
            if current is not None and current.owner is not None:
                continue
            # what nodes relay carries their relay clocks (see .awareness_clock)
            if current is not None and (
                entry.clock < current.relayed
                or (
                    entry.clock == current.relayed
                    and (entry.state is not None or current.state is None)
                )
            ):
                continue
            if not self._room_for(current):
                continue
            self._awareness[entry.client_id] = _AwarenessState(
                entry.clock,
                entry.state,
                None,
                entry.clock,
                node_id,
                _stamped_user(entry.state) or (current.user if current is not None else None),
            )
            accepted.append(AwarenessEntry(entry.client_id, entry.clock, entry.state))
        if accepted:
            self._broadcast_awareness(accepted, None)

    def local_awareness(self) -> bytes | None:
        """The present awareness states of this node's own peers, encoded (``None``: none)."""
        entries = [
            AwarenessEntry(client_id, entry.relayed, entry.state)
            for client_id, entry in self._awareness.items()
            if entry.state is not None and entry.node is None
        ]
        return encode_awareness(entries) if entries else None

    def forget_node(self, node_id: str) -> None:
        """Remove the awareness states a node relayed (it stopped, or died): its peers'
        cursors disappear here, as they would if they had left."""
        removed = []
        for client_id, entry in self._awareness.items():
            if entry.node == node_id and entry.state is not None:
                entry.state = None
                removed.append(AwarenessEntry(client_id, entry.relayed, None))
        if removed:
            self._broadcast_awareness(removed, None)

    def _id_user(self, client_id: int) -> str | None:
        """The person who last held awareness id ``client_id`` here (``None``: no one)."""
        current = self._awareness.get(client_id)
        if current is not None and current.user is not None:
            return current.user
        return self._id_users.get(client_id)

    def _hold_id(self, client_id: int, user: str) -> None:
        """Remember that ``user`` holds ``client_id``, also once its entry is evicted from a
        full table (the most recent ``_ID_USERS`` ids; of each person, the most recent
        ``_IDS_PER_USER``: one who makes up ids by the thousand evicts only their own, never
        the id someone else will come back with)."""
        previous = self._id_users.get(client_id)
        if previous is not None and previous != user and previous in self._ids_of:
            self._ids_of[previous].pop(client_id, None)
        self._id_users[client_id] = user
        self._id_users.move_to_end(client_id)
        mine = self._ids_of.setdefault(user, collections.OrderedDict())
        mine[client_id] = None
        mine.move_to_end(client_id)
        while len(mine) > _IDS_PER_USER:
            oldest, _ = mine.popitem(last=False)
            self._id_users.pop(oldest, None)
        while len(self._id_users) > _ID_USERS:
            oldest, holder = self._id_users.popitem(last=False)
            held = self._ids_of.get(holder)
            if held is not None:
                held.pop(oldest, None)
                if not held:
                    del self._ids_of[holder]

    def _room_for(self, current: _AwarenessState | None, user: str | None = None) -> bool:
        """Whether the awareness table can take an entry whose id holds ``current``: an id it
        holds always can; a new one while the table is not full, once the removed states (kept
        for their clocks) are evicted if it is, and (for a peer of this node, ``user``) while
        that person holds less than their share of it (their tabs, not the whole table)."""
        if current is not None:
            return True
        if user is not None:
            share = max(4, self.max_awareness // _TABLE_SHARE)
            held = sum(
                1 for entry in self._awareness.values() if entry.user == user and entry.state
            )
            if held >= share:
                return False
        if len(self._awareness) < self.max_awareness:
            return True
        for client_id, entry in list(self._awareness.items()):
            if entry.state is None:
                del self._awareness[client_id]
        return len(self._awareness) < self.max_awareness

    def _broadcast_awareness(
        self, entries: list[AwarenessEntry], sender: Subscriber | None
    ) -> None:
        payload = encode_awareness(entries)
        for peer in list(self.peers):
            if peer is not sender:
                peer.send_awareness(payload)

    def awareness_entries(self) -> list[AwarenessEntry]:
        """Every present (non-null) awareness state, for a peer that asks for them all (at
        its sync, or by a query), each with a clock one past the one it was last relayed
        with: a stock client that reconnects keeps the clocks it saw before, and takes only
        a state with a newer one (it would show no one until each renewed their state).

        An entry of this node's own peers is relayed with a clock past that one from now on;
        another node's next clock for its entry is past it already (see .awareness_clock)."""
        entries = []
        for client_id, entry in self._awareness.items():
            if entry.state is None:
                continue
            clock = entry.relayed + 1
            if entry.node is None:
                entry.relayed = clock
            entries.append(AwarenessEntry(client_id, clock, entry.state))
        return entries


def _history_growth(update: bytes) -> int:
    """At most how many bytes ``update``, one the room has applied (read whole: see
    ``Room._history_after``), adds to the document's encoded history."""
    deletions_only = update[:1] == b"\x00"  # no section of structs: a delete set alone
    return (_DELETION_GROWTH if deletions_only else _HISTORY_GROWTH) * len(update)


DELETE_WORK = 8_000_000_000
"""Ranges an update's delete set cuts times the characters of the text it cuts them out
of, past which an update of more than ``max_deleted_ranges`` new ranges is refused: cutting a
range out of an item copies the rest of it, so cutting n ranges out of a text of c
characters costs up to n times c (4,096 ranges out of one item of 2 million characters took
about 0.4 s). A text of up to 2 million characters may lose 4,096 ranges in one update; a
smaller one more (a replace-all of 26,000 matches in a text of 300,000 characters)."""


def _covered(ranges: list[tuple[int, int]], start: int, end: int) -> bool:
    """Whether ``ranges`` (sorted, apart) hold all of ``start`` to ``end``."""
    at = bisect.bisect_right(ranges, (start, MAX_CLOCK + 1)) - 1
    return at >= 0 and ranges[at][1] >= end


_ASTRAL = re.compile("[\U00010000-\U0010ffff]")
"""A character past U+FFFF: two UTF-16 units, a pair."""


def _failed_future(exc: BaseException) -> asyncio.Future[Any]:
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    future.set_exception(exc)
    return future


def _error_of(done: asyncio.Future[Any], what: str) -> BaseException | None:
    """A done future's exception, its cancellation as one, or ``None``."""
    if done.cancelled():
        return asyncio.CancelledError(f"{what} cancelled")
    return done.exception()


def _settle(batch: list[_Pending], exc: BaseException | None) -> None:
    for p in batch:
        if not p.done.done():
            if exc is None:
                p.done.set_result(None)
            else:
                p.done.set_exception(exc)
                p.done.exception()  # the room logged why; whoever awaits it still gets it


def _chain(source: asyncio.Future[None], target: asyncio.Future[None]) -> None:
    """Complete ``target`` as ``source`` completes."""

    def copy(done: asyncio.Future[None]) -> None:
        if target.done():
            return
        if done.cancelled():
            target.cancel()
        elif (exc := done.exception()) is not None:
            target.set_exception(exc)
        else:
            target.set_result(None)

    source.add_done_callback(copy)


def _precheck(update: bytes, shape: UpdateShape | None = None) -> None:
    """Apply ``update`` to a throw-away document first.

    Some malformed updates make the CRDT core panic, and a panic leaves the document it hit
    unusable; those that do so whatever the document's state are caught here, before they
    reach the room's document. Dependencies the empty document lacks only make the update
    pending, which is cheap.

    An update (read as ``shape``) none of whose sections starts at clock 0, which is every
    edit of a client but its first, integrates nothing into an empty document: each section
    waits for the clocks before it, and each deleted range for its client's structs. There
    it only goes through the decoder, which the room's document runs too before it changes
    anything; so such an update is only decoded (``get_state``: no document is made).
    """
    try:
        if shape is not None and 0 not in shape.starts.values():
            get_state(update)
        else:
            _scratch_apply(update)
    except BaseException as exc:
        if isinstance(exc, _PASS_THROUGH):
            raise
        raise InvalidUpdate(f"update rejected: {type(exc).__name__}: {exc}") from None


def _scratch_apply(update: bytes) -> None:
    """Apply ``update`` to a new, empty document and drop it (pycrdt's public ``Doc``: its
    private core type would save about 2.5 µs an update, at the price of a pycrdt upgrade
    breaking the check)."""
    Doc().apply_update(update)


def _stamp(state: dict[str, object] | None, identity: Identity) -> dict[str, object] | None:
    """Overwrite ``user.name`` with the authenticated name (clients cannot pose as others),
    drop a ``user`` colour that is not only a colour (see ``colours``) and a caret that is
    not one (see ``carets``)."""
    if state is None:
        return None
    user = state.get("user")
    stamped_user = dict(user) if isinstance(user, dict) else {}
    stamped_user["name"] = identity.user
    for key in COLOUR_KEYS:
        if key in stamped_user and not is_colour(stamped_user[key]):
            del stamped_user[key]
    stamped = {**state, "user": stamped_user}
    for key in CARET_KEYS:
        if key in stamped:
            caret = caret_of(key, stamped[key])
            if caret is DROPPED:
                del stamped[key]
            else:
                stamped[key] = caret
    return stamped


def _stamped_user(state: dict[str, object] | None) -> str | None:
    """The name a node stamped on a state it relayed (see ``_stamp``)."""
    user = state.get("user") if state is not None else None
    name = user.get("name") if isinstance(user, dict) else None
    return name if isinstance(name, str) else None
