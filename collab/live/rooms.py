"""Loading rooms from the store (or seeding them from git) and unloading idle ones."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from pycrdt import Doc

from gitsync import BlobNotText, BranchDamaged, BranchNotFound, RepoNotFound, Repositories
from protocol.errors import ErrorCode, ProtocolError
from protocol.names import DocId
from protocol.yjs import YjsLimits

from ..git.work import in_git_thread
from ..server.auth import Identity, Role
from ..store.base import Store, StoredDoc
from .epochs import client_id, history_lost, new_epoch, with_epoch
from .events import EventHub
from .memory import release_free_memory
from .room import Room, Subscriber
from .seed import seed_update

__all__ = ["KeepLoaded", "Rooms", "people_in"]

log = logging.getLogger("collab.rooms")

HELD_POLL = 0.05
"""Seconds between two looks of an open at another node's hold on its branch's opens."""
RELEASE_AFTER = 1024 * 1024
"""Unloading a room whose stored history is larger than this gives free memory back to the
system (see ``collab.live.memory``)."""


class KeepLoaded(Exception):
    """Raised by a ``before_unload`` hook to keep the room loaded for now, as planned (not a
    failure): the unload is tried again after the grace time, and the reason is logged at
    INFO."""


class Rooms:
    """Every loaded room, by document id. One load per document, however many ask at once."""

    def __init__(
        self,
        store: Store,
        repos: Repositories,
        *,
        grace: float = 5.0,
        compact_every: int = 1000,
        max_file: int = 8 * 1024 * 1024,
        max_document: int = 0,
        events: EventHub | None = None,
        limits: YjsLimits | None = None,
    ) -> None:
        self.max_file = max_file
        self.max_document = max_document
        self.limits = limits  # what each room's updates are held to (None: the defaults)
        self.events = events
        self.store = store
        self.repos = repos
        self.grace = grace
        self.compact_every = compact_every
        self._rooms: dict[str, Room] = {}
        self._loading: dict[str, asyncio.Task[Room]] = {}
        self._unloading: dict[str, asyncio.Task[None]] = {}
        self._before_hooks: set[str] = set()
        """Rooms whose unload has not yet run its ``before_unload`` hooks to the end (a
        commit of the branch): one may wait there for whoever retires it (see
        :meth:`retire`)."""
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._held: dict[str, asyncio.Event] = {}  # key prefixes no one may open now
        self._opening: dict[str, int] = {}  # key -> opens under way (see opening)
        self.held_elsewhere: Callable[[str], Awaitable[bool]] | None = None
        """In a cluster: whether another node holds the opens of the documents of a branch
        (``repo/branch``) now, as it deletes the branch (see :meth:`acquire`)."""
        self._closing = False  # close() has begun: a failed persist is not retried
        self.damaged: dict[str, str] = {}
        """Quarantined documents (key -> why): their stored history is damaged, so they are
        not served (``DAMAGED``) and nothing of them is committed until a repair. A key
        ``<repo>/<branch>`` (no path) is a whole branch whose ref is damaged."""
        self._held_out: dict[str, str] = {}
        """Documents quarantined for as long as this process runs, whatever their store
        holds (key -> why; see :meth:`hold_out`)."""
        self.committed_state: Callable[[DocId], Awaitable[bytes | None]] | None = None
        """The state vector a document's history had when its branch last took its text (set
        by the git layer): a stored history that does not cover it lost edits its branch
        holds (see ``_lost_history``)."""
        self.history_lost = 0
        """Documents loaded whose stored history lacked edits their branch had committed."""
        # Hooks, each a list run in the order subscribed (the git layer, branches, presence):
        # before a document loads (bring the branch up to date with its ref), when a room is
        # created, when a peer joins or leaves, before a room unloads and once it has. An
        # exception in an awaited hook fails the load or the unload; in another, it is logged.
        self.before_load: list[Callable[[DocId], Awaitable[None]]] = []
        self.on_room: list[Callable[[Room], None]] = []
        self.on_join: list[Callable[[Room, Subscriber], None]] = []
        self.on_leave: list[Callable[[Room, Subscriber], None]] = []
        self.before_unload: list[Callable[[Room], Awaitable[None]]] = []
        self.on_unloaded: list[Callable[[Room], None]] = []

    def active(self, prefix: str) -> bool:
        """Whether a room whose key starts with ``prefix`` is loaded or loading."""
        return any(key.startswith(prefix) for keys in (self._rooms, self._loading) for key in keys)

    def keys(self, prefix: str = "") -> list[str]:
        """The keys of the rooms loaded or loading that start with ``prefix``."""
        both = (self._rooms, self._loading)
        return [key for keys in both for key in keys if key.startswith(prefix)]

    def loaded(self, prefix: str = "") -> list[Room]:
        """The loaded rooms whose key starts with ``prefix`` (``"<repo>/<branch>:"``)."""
        return [room for key, room in self._rooms.items() if key.startswith(prefix)]

    def in_use(self, prefix: str) -> bool:
        """Whether a document whose key starts with ``prefix`` is open (someone is attached
        to its room) or being opened (its room is loading)."""
        return any(room.attached for room in self.loaded(prefix)) or any(
            key.startswith(prefix) for key in self._loading
        )

    @asynccontextmanager
    async def opens_held(self, prefix: str) -> AsyncIterator[None]:
        """Keep everyone from opening a document whose key starts with ``prefix`` while in
        the block (a branch being deleted): an open waits for the block to end, then goes on
        as if it came then (the branch checked again: it finds none if it was deleted). What
        :meth:`in_use` says in the block stays true or becomes false, but for the server's own
        borrowing, which is not held (the work done in the block may borrow rooms). One block
        for a prefix at a time: another waits for it."""
        while (held := self._held.get(prefix)) is not None:
            await held.wait()
        done = self._held[prefix] = asyncio.Event()
        try:
            yield
        finally:
            del self._held[prefix]
            done.set()

    def _held_for(self, key: str) -> asyncio.Event | None:
        return next((done for prefix, done in self._held.items() if key.startswith(prefix)), None)

    @asynccontextmanager
    async def borrow(self, doc_id: DocId) -> AsyncIterator[Room]:
        """The room for ``doc_id``, loaded if needed and kept loaded while in use (for
        changes made by the server itself, such as merges)."""
        holder = _Holder()
        room = await self.acquire(doc_id, holder)
        try:
            yield room
        finally:
            room.detach(holder)

    def __len__(self) -> int:
        return len(self._rooms)

    def get_key(self, key: str) -> Room | None:
        return self._rooms.get(key)

    def opening(self, prefix: str = "") -> list[str]:
        """The keys starting with ``prefix`` of the documents someone is opening now (an
        :meth:`acquire` under way, from the look at its branch to the peer attached; the
        server's own borrowing aside)."""
        return [key for key in self._opening if key.startswith(prefix)]

    async def acquire(self, doc_id: DocId, peer: Subscriber) -> Room:
        """Return the live room for ``doc_id`` with ``peer`` attached, loading it if needed.

        In a cluster, the open counts as one under way (:meth:`opening`) before it looks
        whether another node holds the opens of its branch (``held_elsewhere``: it is
        deleting it), and until the peer is attached: a deletion that began before the look
        finds it (and is refused), or the open finds the hold, and waits for it to end
        without counting, then looks again (and finds no branch if it was deleted)."""
        if isinstance(peer, _Holder):
            return await self._acquire(doc_id, peer)
        key = str(doc_id)
        branch = key.partition(":")[0]
        while True:
            self._opening[key] = self._opening.get(key, 0) + 1
            try:
                if self.held_elsewhere is None or not await self.held_elsewhere(branch):
                    return await self._acquire(doc_id, peer)
            finally:
                self._opening[key] -= 1
                if not self._opening[key]:
                    del self._opening[key]
            while await self.held_elsewhere(branch):
                await asyncio.sleep(HELD_POLL)

    async def _acquire(self, doc_id: DocId, peer: Subscriber) -> Room:
        key = str(doc_id)
        prepared = False
        while True:
            held = None if isinstance(peer, _Holder) else self._held_for(key)
            if held is not None:  # (its branch being deleted)
                await held.wait()
                prepared = False  # the branch looked at again
                continue
            unloading = self._unloading.get(key)
            if unloading is not None:
                await _ended(unloading)
                continue
            room = self._rooms.get(key)
            if room is not None and not room.failed:
                self._cancel_timer(key)
                room.attach(peer)
                if not isinstance(peer, _Holder):
                    _notify(self.on_join, room, peer)
                return room
            if room is not None:  # failed: drop it and load afresh from the store
                await self._unload(room, persist=False)
                continue
            task = self._loading.get(key)
            if task is None:
                if not prepared:
                    await self._prepare(doc_id)
                    prepared = True
                    continue  # the hook may have loaded it, or someone else may be loading it
                task = asyncio.create_task(self._load(doc_id))
                self._loading[key] = task
                task.add_done_callback(functools.partial(self._loaded, key))
            await _ended(task)  # (then found loaded, unless retired since)

    def _loaded(self, key: str, task: asyncio.Task[Room]) -> None:
        """A load is done: its room is loaded from now on (never loading, then neither, for a
        look in between), and unloads after the grace time unless someone attaches."""
        self._loading.pop(key, None)
        if task.cancelled() or task.exception() is not None:
            return  # (raised to whoever waits for it)
        room = task.result()
        if self._rooms.setdefault(key, room) is room:
            self._schedule_unload(room)

    async def _prepare(self, doc_id: DocId) -> None:
        """Check that the branch exists, then run the ``before_load`` hook.

        This runs before the load task, not in it: bringing the branch up to date may merge a
        move of the branch into this very document, which loads it (a hook run inside the
        load would wait for itself)."""
        try:
            await in_git_thread(self.repos, self.repos.branch_head, doc_id.repo, doc_id.branch)
        except RepoNotFound:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no repository {doc_id.repo!r}") from None
        except BranchNotFound:
            raise _no_branch(doc_id) from None
        except BranchDamaged as exc:
            raise self.branch_damaged(doc_id.repo, doc_id.branch, str(exc)) from None
        self.damaged.pop(f"{doc_id.repo}/{doc_id.branch}", None)
        try:
            for hook in self.before_load:
                await hook(doc_id)
        except BranchNotFound:  # deleted meanwhile
            raise _no_branch(doc_id) from None

    def branch_damaged(self, repo: str, branch: str, reason: str) -> ProtocolError:
        """Report the branch ``repo``/``branch`` damaged (its ref): listed in ``damaged``
        until it is read whole again; its documents are refused with ``DAMAGED``."""
        key = f"{repo}/{branch}"
        if key not in self.damaged:
            log.error(
                "%s: %s; its documents are not served or committed until it is repaired",
                key,
                reason,
            )
            if self.events is not None:
                self.events.publish(
                    repo, {"kind": "damaged", "branch": branch, "path": None, "reason": reason}
                )
        self.damaged[key] = reason
        return ProtocolError(ErrorCode.DAMAGED, reason)

    async def _load(self, doc_id: DocId) -> Room:
        stored = await self._stored(doc_id)
        doc: Doc[Any] = Doc(client_id=client_id())
        lacking = None
        if stored is None or stored.empty:
            lost = stored is not None or await self._history_gone(doc_id, doc)
            last_seq = await self._seed(doc_id, doc, lost=lost)
        else:
            stored.apply_to(doc)
            last_seq = stored.last_seq
            lacking = await self._lost_history(doc_id, doc)
        room = Room(
            doc_id,
            doc,
            self.store,
            last_seq=last_seq,
            compact_every=self.compact_every,
            max_document=self.max_document,
            limits=self.limits,
        )
        room.loaded_seq = stored.last_seq if stored is not None else 0
        if stored is not None and not stored.empty:
            room.updates_since_snapshot = len(stored.updates)
            room.bytes_since_snapshot = sum(len(update) for _seq, update in stored.updates)
            room.snapshot_bytes = len(stored.snapshot or b"")
            room.recovered = stored.recovered
            room.lacking = lacking
        room.on_idle = self._schedule_unload
        room.on_leave = self._left
        _notify(self.on_room, room)
        return room

    def hold_out(self, doc_id: DocId, reason: str) -> None:
        """Quarantine ``doc_id`` for as long as this process runs, whatever its store holds
        (a move of its branch could not be merged into it: served, its text would be older
        than the branch's): refused with ``DAMAGED`` and listed in ``damaged``; never
        committed, as it is never loaded. Logged by the caller; published as ``damaged``."""
        key = str(doc_id)
        self._held_out[key] = reason
        self.damaged[key] = reason
        if self.events is not None:
            self.events.publish(
                doc_id.repo,
                {"kind": "damaged", "branch": doc_id.branch, "path": doc_id.path, "reason": reason},
            )

    async def _stored(self, doc_id: DocId) -> StoredDoc | None:
        """The document's stored history; a damaged one quarantines the document."""
        key = str(doc_id)
        held = self._held_out.get(key)
        if held is not None:
            self.damaged[key] = held
            raise ProtocolError(
                ErrorCode.DAMAGED,
                "the document could not take a change of its branch: quarantined until an "
                "operator repairs it",
            )
        try:
            stored = await self.store.load(key)
        except Exception as exc:  # the store cannot read its records (a damaged page, say)
            raise self._quarantine(doc_id, f"its records cannot be read: {exc}") from None
        if stored is not None and stored.corrupt is not None:
            bad = stored.corrupt
            raise self._quarantine(doc_id, f"record {bad.seq} is damaged: {bad.reason}")
        self.damaged.pop(key, None)
        return stored

    def _quarantine(self, doc_id: DocId, reason: str) -> ProtocolError:
        key = str(doc_id)
        if key not in self.damaged:
            log.error(
                "%s: quarantined: %s; it is not served, and its branch keeps its last commit, "
                "until `collab store repair`",
                key,
                reason,
            )
            if self.events is not None:
                self.events.publish(
                    doc_id.repo,
                    {
                        "kind": "damaged",
                        "branch": doc_id.branch,
                        "path": doc_id.path,
                        "reason": reason,
                    },
                )
        self.damaged[key] = reason
        return ProtocolError(
            ErrorCode.DAMAGED,
            "the document's stored history is damaged: quarantined until an operator repairs it",
        )

    async def _lost_history(self, doc_id: DocId, doc: Doc[Any]) -> bytes | None:
        """The state vector its branch's commits took from the document, if ``doc`` (as
        loaded from the store) does not cover it: the store went back to an older state (a
        damaged or truncated log after a crash) and lost edits its branch already holds.
        Such a document is not committed until its history is whole again (see
        ``BranchSync._hold_shrinking``): its clients hold what the store lost, and send it
        back when they reconnect."""
        if self.committed_state is None:
            return None
        committed = await self.committed_state(doc_id)
        if committed is None or not history_lost(doc.get_state(), committed):
            return None
        log.warning(
            "%s: its stored history lacks edits its branch already committed (the store went "
            "back to an older state: a damaged or truncated log after a crash?); it is not "
            "committed until clients that hold them send them back (or `collab store "
            "repair --reseed`)",
            doc_id,
        )
        self.history_lost += 1
        return committed

    async def _history_gone(self, doc_id: DocId, doc: Doc[Any]) -> bool:
        """Whether the store holds nothing of a document its branch committed edits of: the
        store lost it whole (it went back to an older copy, say)."""
        if self.committed_state is None:
            return False
        committed = await self.committed_state(doc_id)
        if committed is None or not history_lost(doc.get_state(), committed):
            return False
        self.history_lost += 1
        return True

    async def _seed(self, doc_id: DocId, doc: Doc[Any], *, lost: bool) -> int:
        """Seed ``doc`` from the branch head, as a new epoch; the update's sequence number."""
        key = str(doc_id)
        try:
            blob = await in_git_thread(
                self.repos, self.repos.read_file, doc_id.repo, doc_id.branch, doc_id.path
            )
        except BlobNotText as exc:
            raise ProtocolError(ErrorCode.NOT_TEXT, str(exc)) from None
        except BranchNotFound:  # deleted since the load began
            raise _no_branch(doc_id) from None
        if len(blob.text) > self.max_file // 4 and len(blob.text.encode()) > self.max_file:
            raise ProtocolError(ErrorCode.TOO_LARGE, f"{doc_id.path} is over {self.max_file} bytes")
        epoch = new_epoch()
        update = with_epoch(seed_update(blob.sha, blob.text), epoch)
        last_seq = await self.store.append(key, update)
        doc.apply_update(update)
        source = blob.sha.decode() if blob.sha else "nothing"
        if lost:
            log.warning(
                "%s: its stored history was lost (in a repair, or with a store that went "
                "back to an older copy); seeded again from %s as epoch %x (clients holding "
                "the old history are told to reload)",
                key,
                source,
                epoch,
            )
            if self.events is not None:
                self.events.publish(
                    doc_id.repo,
                    {
                        "kind": "reseeded",
                        "branch": doc_id.branch,
                        "path": doc_id.path,
                        "blob": None if blob.sha is None else blob.sha.decode(),
                    },
                )
        else:
            log.info("%s: seeded from %s as epoch %x", key, source, epoch)
        return last_seq

    def _left(self, room: Room, peer: Subscriber) -> None:
        if not isinstance(peer, _Holder):
            _notify(self.on_leave, room, peer)

    def _cancel_timer(self, key: str) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    def _schedule_unload(self, room: Room) -> None:
        self._cancel_timer(room.key)
        loop = asyncio.get_running_loop()
        self._timers[room.key] = loop.call_later(self.grace, self._start_unload, room)

    def _start_unload(self, room: Room) -> None:
        self._timers.pop(room.key, None)
        if room.attached or room.key in self._unloading or self._rooms.get(room.key) is not room:
            return
        self._track_unloading(room.key, asyncio.create_task(self._unload(room, persist=True)))

    def _track_unloading(self, key: str, task: asyncio.Task[None]) -> None:
        """Register ``task`` as the unload of ``key`` under way, until it ends (whoever opens
        the document meanwhile waits for it)."""
        self._unloading[key] = task

        def done(_task: asyncio.Task[None]) -> None:
            if self._unloading.get(key) is task:  # (not a retire chained after it)
                del self._unloading[key]

        task.add_done_callback(done)

    async def _unload(self, room: Room, *, persist: bool) -> None:
        """Persist and forget ``room``; if persisting fails it stays loaded and retries. A
        room retired meanwhile (see :meth:`retire`) is not persisted."""
        try:
            if persist:
                self._before_hooks.add(room.key)
            try:
                await room.drain()
                if persist and not room.failed and not room.retired:
                    for hook in self.before_unload:
                        await hook(room)
            finally:
                self._before_hooks.discard(room.key)
            if persist and not room.failed and not room.retired and room.updates_since_snapshot:
                await room.compact()
        except KeepLoaded as kept:
            if not self._closing:
                log.info("%s: kept loaded: %s", room.key, kept)
                self._schedule_unload(room)
                return
        except Exception:
            if not self._closing:
                log.exception("%s: persist before unload failed; keeping the room", room.key)
                self._schedule_unload(room)
                return
            # shutting down: no retry would ever come; the store holds every update, and the
            # next start commits what the branch lacks
            log.exception("%s: persist before unload failed at shutdown", room.key)
        if room.attached and not room.failed:
            return  # someone arrived while we were persisting
        await room.stop()
        if self._rooms.get(room.key) is room:
            del self._rooms[room.key]
        log.debug("%s: unloaded", room.key)
        if room.snapshot_bytes + room.bytes_since_snapshot > RELEASE_AFTER:
            # once the room is gone: this frame and its caller's still hold it
            asyncio.get_running_loop().call_later(0.5, release_free_memory)
        _notify(self.on_unloaded, room)

    async def retire(
        self,
        key: str,
        code: ErrorCode,
        reason: str,
        *,
        level: int = logging.WARNING,
        keep_store: bool = False,
    ) -> None:
        """Close the document ``key`` for good (its file is no longer text, say): its peers
        are closed with ``code``, the room is unloaded without a last persist, and its
        stored history is dropped (unless ``keep_store``: another node of a cluster drops
        it), so that opening it again starts from the branch. It is logged at ``level``.

        A room whose unload is running its ``before_unload`` hooks is closed at once, and
        its retire ends after that unload (which persists nothing more of it): this returns
        without waiting for it, which may be waiting for the caller."""
        self._cancel_timer(key)
        while (unloading := self._unloading.get(key)) is not None:
            if key in self._before_hooks:
                # its unload is in the hooks before it, which may wait for what retires it
                # (the commit of its branch that closes it holds the branch's lock): it is
                # closed now, persisted no more, and its retire ends after that unload
                room = self._rooms.get(key)
                if room is not None and not room.retired:
                    self._close(room, code, reason, level)
                retire = self._retire(key, code, reason, level, keep_store, after=unloading)
                self._track_unloading(key, asyncio.create_task(retire))
                return
            await _ended(unloading)
        # registered as an unload: whoever opens the document meanwhile waits for it, then
        # finds no history, and the branch decides (4013 for what is no text)
        task = asyncio.create_task(self._retire(key, code, reason, level, keep_store))
        self._track_unloading(key, task)
        await asyncio.shield(task)

    async def _retire(
        self,
        key: str,
        code: ErrorCode,
        reason: str,
        level: int,
        keep_store: bool,
        after: asyncio.Task[None] | None = None,
    ) -> None:
        if after is not None:
            await asyncio.wait([after])  # (how it ended is its own to report)
        room = self._rooms.get(key)
        if room is not None:
            if not room.retired:
                self._close(room, code, reason, level)
            await self._unload(room, persist=False)
        if not keep_store:
            await self.store.delete(key)

    def _close(self, room: Room, code: ErrorCode, reason: str, level: int) -> None:
        """Mark ``room`` retired (nothing more of it is committed or persisted), log it at
        ``level`` and close its peers with ``code``."""
        room.retired = True
        log.log(level, "%s: closed: %s", room.key, reason)
        for peer in list(room.attached):
            peer.abort(code, reason)
        room.attached.clear()
        room.peers.clear()

    async def close(self) -> None:
        """Persist and unload every room (server shutdown); a room whose persisting fails
        is unloaded all the same, with nothing left to retry."""
        self._closing = True
        for key in list(self._timers):
            self._cancel_timer(key)
        await asyncio.gather(*self._unloading.values(), return_exceptions=True)
        for room in list(self._rooms.values()):
            room.attached.clear()
            await self._unload(room, persist=True)


async def _ended(task: asyncio.Future[Any]) -> None:
    """Wait for ``task`` (a load or an unload, shared by whoever waits: not cancelled with
    one of them) to end, raising what it raised, then for one turn of the loop: its done
    callbacks, which register what it did (a room loaded, an unload over), run in a turn after
    it ends, and a task that ended already is awaited without one. A caller that looked again
    before them would find it still under way, and wait for it again for ever, every other
    task of the server held up."""
    await asyncio.shield(task)
    await asyncio.sleep(0)


def people_in(room: Room) -> list[Subscriber]:
    """Who has ``room`` open: the peers attached to it, less the holders the server borrows
    rooms with (see :meth:`Rooms.borrow`), who are no one, whatever their identity's name."""
    return [peer for peer in room.attached if not isinstance(peer, _Holder)]


def _notify(hooks: list[Callable[..., None]], *args: Any) -> None:
    for hook in list(hooks):
        try:
            hook(*args)
        except Exception:
            log.exception("room hook %r failed", hook)


class _Holder:
    """The subscriber that keeps a borrowed room loaded; it receives nothing."""

    identity = Identity("collab", Role.WRITE, "*")

    def send_updates(self, updates: list[bytes]) -> None:
        pass

    def send_awareness(self, payload: bytes) -> None:
        pass

    def abort(self, code: ErrorCode, reason: str) -> None:
        pass


def _no_branch(doc_id: DocId) -> ProtocolError:
    return ProtocolError(ErrorCode.NOT_FOUND, f"no branch {doc_id.branch!r} in {doc_id.repo!r}")
