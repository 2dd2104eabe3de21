"""Live documents and git branches as one system.

Every branch with loaded documents has a :class:`BranchSync`. It commits the live text of the
documents changed since its last commit after an idle time or a maximum lag (continuous
commits), and brings the live documents up to date when the branch's ref moves for another
reason (a ``git push``, a commit by another tool) by applying the difference as text edits.

A move to a commit that does not descend from the one the live documents match (a force push,
a reset) is followed too: live edits not committed yet are merged onto the new head where they
merge cleanly, and otherwise committed on a branch of their own before the document is made
to read as the new head. A move that makes a file no text file (a binary file, a directory,
a symbolic link) closes its document; its live edits not committed yet go to such a branch
first.

Which commit the live documents match is recorded in the private ref
``refs/collab/synced/<branch>``: it is the parent of the next continuous commit and the merge
base when the branch moves outside the engine, and it survives a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from dulwich.graph import can_fast_forward
from dulwich.objects import ObjectID
from dulwich.repo import Repo
from pycrdt import Doc, Text

from gitsync import (
    BranchDamaged,
    BranchNotFound,
    RepoNotFound,
    Repositories,
)
from gitsync.changes import (
    FileChange,
    blocked_at,
    changed_files,
    is_text,
    not_text_at,
    read_blob,
    unchanged_at,
)
from gitsync.fence import Fenced, claim, fenced
from gitsync.locks import STALE_AFTER
from gitsync.merge.plan import merge_text
from gitsync.merge.renames import RENAME_SCORE, similarity
from gitsync.naming import rescue_branch
from gitsync.objects.commits import (
    BranchExists,
    NothingToCommit,
    RefMoved,
    WrittenCommit,
    author_line,
    branch_ref,
    clear_committing,
    clear_merging,
    combine_packs,
    commit_changes,
    commit_message,
    create_branch,
    forget_records,
    free_branch,
    land_commit,
    move_as_synced,
    read_committing,
    read_merging,
    read_ref,
    read_synced,
    recover_stale_locks,
    set_merging,
    set_synced,
    stale_records,
    write_commit,
)
from gitsync.objects.fsck import file_problem
from gitsync.objects.ref_names import RefClash
from gitsync.objects.synced_state import (
    forget_synced_state,
    read_synced_state,
    record_synced_state,
)
from gitsync.packs.write import fsync_directory
from gitsync.repos import is_stored
from protocol.errors import ErrorCode, ProtocolError
from protocol.names import DocId, validate_path

from ..bus.lease import Held, LeaseLost
from ..live.epochs import history_lost
from ..live.events import EventHub, hexsha
from ..live.marks import mark_id
from ..live.origin import Origin
from ..live.room import Room
from ..live.rooms import KeepLoaded
from ..live.seed import TEXT_NAME
from ..live.text_edits import apply_edits, diff_edits
from ..server.auth import Identity, Role
from .rescue_paths import rescue_paths
from .unrecorded import RepoIdentity, Unrecorded
from .work import in_git_thread, in_repo

if TYPE_CHECKING:
    from ..bus.lease import Grant, Leases
    from ..live.rooms import Rooms
    from ..store.base import Fence, Store

__all__ = ["ENGINE_AUTHOR", "BranchSync", "GitSync", "LeaseBusy", "Rescue", "fence_for"]

T = TypeVar("T")

log = logging.getLogger("collab.git")

ENGINE_AUTHOR = "collab <collab@localhost>"
EMPTY_STATE = b"\x00"
"""The state vector of a document without history."""
RETRY_MAX_S = 60.0
"""The longest wait before a commit that keeps failing is tried again."""
CLEAN_SHUTDOWN = "clean-shutdown"
"""File in the data directory left by a shutdown that committed all live state."""
SHRINK_RATIO = 0.5
"""A document recovered after damage whose text is under this share of its file at the
branch head (and :data:`SHRINK_BYTES` shorter) is not committed: its history may be missing
edits, and the commit would erase them from the branch."""
SHRINK_BYTES = 128
UNKNOWN_COMMIT = b"0" * 40
"""The commit the live documents match, where their repository holds no record of it (see
``GitSync._create``): git's null id, which names no object."""


def replace_text(
    room: Room,
    new: str,
    *,
    origin: Origin,
    mark: int | None = None,
    fence: Fence | None = None,
) -> asyncio.Future[None]:
    """Make ``room``'s text read ``new`` with the smallest edits (and ``mark`` it, see
    :mod:`collab.live.marks`; under the lease ``fence``, see ``Room.edit``); returns the
    durability future. Runs without yielding, so no other change interleaves."""
    current = str(room.text)
    edits = diff_edits(current, new)
    return room.edit(
        lambda text: apply_edits(text, current, edits), origin=origin, mark=mark, fence=fence
    )


STORE_WAIT = 5.0
"""Seconds a read of the shared store (in a cluster) may take before a branch operation
that needs it fails; the store itself waits for Redis to come back for longer."""


def _outage(exc: BaseException) -> bool:
    """Whether ``exc`` is Redis, a disk or the network being away (no bug to trace)."""
    if isinstance(exc, (OSError, TimeoutError)):
        return True
    errors = sys.modules.get("redis.exceptions")  # (never imported: no Redis to be away)
    return errors is not None and isinstance(exc, errors.RedisError)


_NOT_THE_DOCUMENTS = frozenset(
    {ErrorCode.NOT_FOUND, ErrorCode.TIMEOUT, ErrorCode.UNAVAILABLE, ErrorCode.SHUTTING_DOWN}
)
"""Codes of a load that failed for a reason other than the document's own: its branch or
repository is gone, or a backend did not answer."""


class LeaseBusy(Exception):
    """Another node of the cluster holds a branch's lease: what was to be committed here
    first is not committed yet."""


class BranchSync:
    """Continuous commits and external-move reconciliation for one branch."""

    def __init__(self, owner: GitSync, repo: str, branch: str, synced: bytes) -> None:
        self.owner = owner
        self.repo = repo
        self.branch = branch
        self.name = f"{repo}/{branch}"  # for log lines
        self.prefix = f"{self.name}:"  # of its documents' keys
        self.synced = synced
        self.lock = asyncio.Lock()
        self.dirty: dict[str, Room] = {}
        self.held: dict[str, tuple[int, int]] = {}  # path -> (live size, head size), not committed
        self.refused: dict[str, str] = {}  # path -> the fsck problem its text has, not committed
        self.authors: dict[str, Identity] = {}
        self._naming: dict[str, Identity] | None = None
        """While a commit is under way: the people it names, its take of the store's made
        (a rescue it makes asks the store no more, see :meth:`rescuers`)."""
        self._rescued: tuple[set[str], set[str]] = (set(), set())
        """The store's writers that rescues made under the commit under way named, and the
        files they kept: settled with that commit (see :meth:`rescue_landed`)."""
        self.committed_states: dict[str, bytes] = {}
        """Each document's state vector when its text was last committed or a move merged
        into it (see ``gitsync.objects.synced_state``), as recorded in the git directory."""
        self.taken: dict[str, bytes] = {}  # merged into documents, recorded before synced moves
        self.emptied: set[str] = set()
        """Documents the last move emptied, as it deleted (or renamed) their file: not to be
        committed back as empty files."""
        self.reconciling = False
        self.deleting = False  # the engine is deleting the branch: do not restore it
        self._idle: asyncio.TimerHandle | None = None
        self._last_touch = 0.0
        self._deadline: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._again = False  # kicked while the background commit ran
        self._failures = 0  # commits failed in a row: each waits twice as long to try again
        self._held: Held | None = None  # the lease kept while this node works under it

    # -- continuous commits ------------------------------------------------------------------

    def check_clash(self, path: str) -> None:
        """Refuse (``NOT_TEXT``, as a path below a file of the branch is) to open ``path``
        while a live document of this branch lies above it or below it (git has that one
        as a file not yet, or it could not be open): ``notes`` and ``notes/todo.md``
        cannot both be files.

        A loaded document that holds no text and has no edits to commit is no such file
        (its file deleted by a push and its document left open, say): it is not counted."""
        cut = len(self.prefix)
        opened = {key[cut:] for key in self.owner.rooms.keys(self.prefix)} | set(self.dirty)

        def live(other: str) -> bool:  # (the text is read only for the paths in question)
            if other == path:
                return False
            if other in self.dirty:
                return True
            room = self.owner.rooms.get_key(self.prefix + other)  # None while it loads
            return room is None or (not room.retired and bool(str(room.text)))

        above = next((p for p in _parents(path) if p in opened and live(p)), None)
        if above is not None:
            raise ProtocolError(
                ErrorCode.NOT_TEXT,
                f"{path} lies below {above}, a file open on {self.branch} (not committed yet)",
            )
        below = sorted(p for p in opened if p.startswith(path + "/") and live(p))
        if below:
            raise ProtocolError(
                ErrorCode.NOT_TEXT,
                f"{path} is a directory of files open on {self.branch} ({below[0]})",
            )

    def touch(self, room: Room, origin: Origin, author: Identity | None) -> None:
        """A room of this branch changed: commit after the idle time or the maximum lag."""
        self.dirty[room.doc_id.path] = room
        if author is not None and origin in (Origin.CLIENT, Origin.AI):
            self.authors.setdefault(author.user, author)
        loop = asyncio.get_running_loop()
        # One idle timer, pushed back lazily when it fires: a keystroke only stamps the time.
        self._last_touch = loop.time()
        if self._idle is None:
            self._idle = loop.call_later(self.owner.idle, self._idle_due)
        if self._deadline is None:
            self._deadline = loop.call_later(self.owner.max_lag, self._kick)

    @property
    def idle(self) -> bool:
        """Nothing pending, held, scheduled or under way."""
        running = self._task is not None and not self._task.done()
        timers = self._idle is not None or self._deadline is not None
        return not (self.dirty or self.held or self.lock.locked() or running or timers)

    def _idle_due(self) -> None:
        loop = asyncio.get_running_loop()
        remaining = self._last_touch + self.owner.idle - loop.time()
        if remaining > 0:
            self._idle = loop.call_later(remaining, self._idle_due)
        else:
            self._kick()

    def _cancel_timers(self) -> None:
        for timer in (self._idle, self._deadline):
            if timer is not None:
                timer.cancel()
        self._idle = self._deadline = None

    def _kick(self) -> None:
        self._cancel_timers()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._background_flush())
        else:  # a commit is under way: commit again once it ends (the edits it did not take)
            self._again = True

    async def _background_flush(self) -> None:
        try:
            while True:
                self._again = False
                await self.flush()
                if not self._again:
                    break
        except Exception as exc:
            if isinstance(exc, (Fenced, LeaseLost)):
                # this node was held up past its lease (a pause) and another took the branch
                # over: its ref was not moved, as planned; no bug to trace
                log.warning(
                    "%s: continuous commit refused, another node took the branch's lease "
                    "over (%s); tried again later",
                    self.name,
                    exc,
                )
            elif self._failures <= 1 and not _outage(exc):
                log.exception("%s: continuous commit failed; retrying later", self.name)
            elif self._failures & (self._failures - 1) == 0:  # the 1st, 2nd, 4th, 8th...
                log.warning(
                    "%s: continuous commit failed (%d in a row; tried again later): %r",
                    self.name,
                    self._failures,
                    exc,
                )

    def retry_delay(self) -> float:
        """How long the next try of a failed commit waits: the idle time (at least a
        second), doubled for each failure in a row after the first, up to ``RETRY_MAX_S``."""
        first = max(self.owner.idle, 1.0)
        doubled = first * (1 << min(max(self._failures - 1, 0), 16))
        return min(doubled, max(first, RETRY_MAX_S))

    def _retry_later(self) -> None:
        """A commit failed: what it did not take is tried again later (``retry_delay``),
        whoever asked for it."""
        self._failures += 1
        if self.dirty and not self.owner.stopped:
            self._cancel_timers()
            loop = asyncio.get_running_loop()
            self._idle = loop.call_later(self.retry_delay(), self._kick)

    async def flush(self) -> bytes:
        """Commit every pending live change now; return the branch's synced commit.

        In a cluster the commit is made under the branch's lease (one node at a time, its
        ref moves fenced); while another node holds it, the edits stay pending here and the
        commit is tried again shortly. If the commit fails, it is tried again later."""
        try:
            synced = await self._flush()
        except Exception:
            self._retry_later()
            raise
        self._failures = 0
        return synced

    async def _flush(self) -> bytes:
        async with self.lock:
            if self.owner.leases is None:
                await self._commit()
                return self.synced
            grant = await self.lease()
            if grant is None:
                if self.dirty and not self.owner.stopped:
                    loop = asyncio.get_running_loop()
                    self._cancel_timers()
                    self._idle = loop.call_later(self.owner.lease_retry, self._kick)
                return self.synced
            async with self.holding(grant):
                await self._commit(grant)
            return self.synced

    async def flush_everywhere(self) -> bytes:
        """:meth:`flush`, with every edit pending for the branch on any node of a cluster:
        its documents not loaded here that hold such edits are loaded first (see
        :meth:`borrow_pending`), and the commit waits for the branch's lease rather than
        leaving them to its holder (with nothing pending anywhere, the branch's head is
        returned as it is). For what must hold every edit typed so far: a fork, a merge, a
        fetch, a branch's log. Raises ``CONFLICT`` if another node keeps the lease."""
        leases = self.owner.leases
        if leases is None:
            return await self.flush()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + leases.ttl + 2 * self.owner.lease_retry
        async with contextlib.AsyncExitStack() as borrowed:
            await self.borrow_pending(borrowed)
            if not self.dirty:  # nothing pending on any node: no commit, no lease to take
                head = await in_git_thread(
                    self.owner.repos, self.owner.head, self.repo, self.branch
                )
                return self.synced if head is None else head
            while True:
                async with self.lock:  # (not held while waiting: this node's commits go on)
                    grant = await self.lease()
                    if grant is not None:
                        try:
                            async with self.holding(grant):
                                await self._commit(grant)
                        except Exception:
                            self._retry_later()  # (as flush: what it did not take is kept)
                            raise
                        self._failures = 0
                        return self.synced
                if loop.time() > deadline:
                    raise ProtocolError(
                        ErrorCode.CONFLICT,
                        f"{self.name}: another node kept the branch's lease; try again",
                    )
                await asyncio.sleep(self.owner.lease_retry)

    async def borrow_pending(self, borrowed: contextlib.AsyncExitStack) -> None:
        """In a cluster: load here, for as long as ``borrowed`` lasts, every document of the
        branch not loaded here whose stored text is not the synced commit's (edits typed on
        another node and not committed yet), and mark it changed, so that the next commit
        made here holds them. Call it without the lock (a load may take it). Outside a
        cluster there are none: a room unloads only once its edits are committed."""
        if self.owner.leases is None:
            return
        loaded = set(self.owner.rooms.keys(self.prefix))
        try:
            async with asyncio.timeout(STORE_WAIT):  # (it waits for Redis to come back)
                keys = await self.owner.store.keys(self.prefix)
        except TimeoutError:
            raise ProtocolError(
                ErrorCode.TIMEOUT, f"{self.name}: the shared store did not answer; try again"
            ) from None
        for key in keys:
            if key in loaded:
                continue
            path = key[len(self.prefix) :]
            try:
                async with asyncio.timeout(STORE_WAIT):
                    stored = await self.owner.store.load(key)
                if stored is None or stored.empty or stored.corrupt is not None:
                    continue  # (a damaged history is reported where it is opened)
                doc: Doc[Any] = Doc()
                stored.apply_to(doc)
                text = str(doc.get(TEXT_NAME, type=Text)).encode("utf-8")
                blob = await in_repo(self.owner.repos, self.repo, read_blob, self.synced, path)
                if (blob or b"") == text:
                    continue
                room = await borrowed.enter_async_context(self.owner.rooms.borrow(DocId.parse(key)))
            except Exception as exc:
                log.warning(
                    "%s%s: its edits typed on another node could not be taken: %r",
                    self.prefix,
                    path,
                    exc,
                )
                continue
            self.touch(room, Origin.BUS, None)

    async def flush_patiently(self, committed: Callable[[], bool] | None = None) -> None:
        """Flush until ``committed()`` (by default: until nothing is pending). In a cluster,
        while another node holds the branch's lease, try again every ``lease_retry``
        seconds, for as long as a lease lasts (its holder releases it once its commit is
        made, or it expires)."""
        done = committed or (lambda: not self.dirty)
        await self.flush()
        leases = self.owner.leases
        if leases is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + leases.ttl + 2 * self.owner.lease_retry
        while not done() and loop.time() < deadline:
            await asyncio.sleep(self.owner.lease_retry)
            await self.flush()

    async def lease(self) -> Grant | None:
        """The branch's lease for this node, with the branch claimed for its token and the
        commit the cluster last synced adopted; ``None`` while another node holds it."""
        assert self.owner.leases is not None
        grant = await self.owner.leases.acquire(self.name)
        if grant is None:
            return None
        try:
            await in_repo(self.owner.repos, self.repo, claim, self.branch, grant.token)
            await self._adopt_cluster_commit()
            await self._finish_interrupted_commit()
        except Fenced as exc:
            # a fresh grant below the branch's fence: the cluster's counter went back (a
            # Redis that lost its data); raised past the fence, the next grant passes it
            log.warning(
                "%s: lease counter behind the branch's fence (%s); raising it", self.name, exc
            )
            await self.owner.leases.advance(self.name, exc.seen)
            await self.owner.leases.release(grant)
            return None
        except BaseException:  # not held on for its lifetime: the other nodes go on
            with contextlib.suppress(Exception):
                await self.owner.leases.release(grant)
            raise
        return grant

    async def lease_patiently(self) -> Grant | None:
        """The branch's lease (``None`` outside a cluster), waited for while another node
        holds it, for as long as a lease lasts; ``LeaseBusy`` if it is not had by then."""
        leases = self.owner.leases
        if leases is None:
            return None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + leases.ttl + 2 * self.owner.lease_retry
        while (grant := await self.lease()) is None:
            if loop.time() > deadline:
                raise LeaseBusy(f"{self.name}: another node kept the branch's lease")
            await asyncio.sleep(self.owner.lease_retry)
        return grant

    @contextlib.asynccontextmanager
    async def holding(self, grant: Grant | None) -> AsyncIterator[None]:
        """Keep ``grant`` (renewed) for the block, then release it (none: outside a
        cluster, nothing to keep). A step of the block that another holder could repeat (a
        change merged into a document) checks first that the grant is still held
        (``check_lease``)."""
        if grant is None or self.owner.leases is None:
            yield
            return
        held = Held(self.owner.leases, grant)
        self._held = held
        try:
            yield
        finally:
            self._held = None
            await held.release()

    @property
    def fence(self) -> Grant | None:
        """The lease this node works under now, which its edits of the documents carry (in
        a cluster; see ``Room.edit``)."""
        return None if self._held is None else self._held.grant

    def check_lease(self) -> None:
        """Raise ``LeaseLost`` if the lease this node works under was lost (in a cluster)."""
        if self._held is not None:
            self._held.check()

    async def _finish_interrupted_commit(self) -> None:
        """In a cluster, with the lease: a commit of the shared documents that a node was
        making when it died (the branch moved to it, and it is not recorded as synced yet)
        is recorded as synced now, and adopted. Left for later, this node's next commit
        would write its own record over that one's, then find the branch moved, and merge
        that commit into the documents, which hold it already, a second time."""

        def finish(repo: Repo) -> bytes | None:
            head = read_ref(repo, branch_ref(self.branch))
            if head is None:
                return None
            return _finish_commit(repo, self.branch, head, self.synced)

        synced = await in_repo(self.owner.repos, self.repo, finish)
        if synced is not None and synced != self.synced:
            await self._adopt_cluster_commit()

    async def _adopt_cluster_commit(self) -> None:
        """If another node of the cluster synced the shared documents with the branch since
        this node last did (it committed their text, or merged a move into them), take that
        commit as the synced one: the documents hold it already, so there is nothing of it
        to merge into them, and a move made on top of it since is merged from there (not
        from this node's older synced commit, which would merge that node's work twice)."""
        synced = await in_repo(self.owner.repos, self.repo, read_synced, self.branch)
        if synced is None or synced == self.synced:
            return
        self.synced = synced
        self.committed_states = await in_repo(
            self.owner.repos, self.repo, read_synced_state, self.branch
        )
        # that node may have merged a move that made files no text, and closed its
        # documents of them: this node's copies close too, or their text would be
        # committed over what the move put there
        loaded = [room.key[len(self.prefix) :] for room in self.owner.rooms.loaded(self.prefix)]
        if loaded:
            await self.retire(
                await in_repo(self.owner.repos, self.repo, not_text_at, synced, loaded)
            )

    async def _commit(
        self, grant: Grant | None = None, on_snapshot: Callable[[], None] | None = None
    ) -> None:
        """Commit the documents' pending text. ``on_snapshot`` is called as the text is
        taken, with no await in between (a fork copies the documents then).

        In a cluster, ``grant`` is the branch's lease, held: a commit made without it would
        move the ref under the holder's feet, which would take it for a push."""
        if self.owner.leases is not None and grant is None:
            raise RuntimeError(f"{self.name}: a commit in a cluster needs the branch's lease")
        self._cancel_timers()
        if not self.dirty:
            # nothing pending: whoever is still known to have written had their text
            # committed, or kept on a rescue branch (after a crash, say)
            self.authors = {}
            return
        rooms: dict[str, Room] = {}
        authors: dict[str, Identity] = {}
        self._rescued = (set(), set())
        try:
            await asyncio.gather(*(room.drain() for room in self.dirty.values()))
            await self._take_authors()  # (who wrote to which file: named below, by file)
            self._naming = authors
            for _attempt in range(5):
                # The text committed and the people who typed it are taken together, with no
                # await in between: an edit that lands meanwhile comes with its author.
                rooms.update(self.dirty)
                self.dirty = {}
                for user, identity in self.authors.items():
                    authors.setdefault(user, identity)
                self.authors = {}
                if any(room.failed for room in rooms.values()):
                    self.owner.incomplete = True  # their stored edits wait for a recovery
                changes: dict[str, bytes] = {}
                states: dict[str, bytes] = {}
                for path, room in rooms.items():
                    if not room.failed and not room.retired:
                        changes[path] = str(room.text).encode("utf-8")
                        states[path] = room.doc.get_state()  # the history the text is of
                if on_snapshot is not None:
                    on_snapshot()
                await self._hold_shrinking(rooms, changes)
                self._hold_behind(rooms, changes, states)
                self._hold_refused_by_fsck(changes)
                await self._close_blocked(changes, grant)
                clashing = self._hold_clashing(changes)
                # What is committed must be durable in the store first: a crash (a power
                # loss) must not leave the branch with edits the store lost, and the state
                # recorded with the commit is what a stored document must hold (its record).
                await asyncio.gather(*(rooms[path].drain() for path in changes))
                for path in [path for path in changes if rooms[path].failed]:
                    self.owner.incomplete = True
                    del changes[path]
                states = {path: states[path] for path in changes}
                for user in self._authors_of(list(changes)):  # (typed on any node)
                    authors.setdefault(user, Identity(user, Role.WRITE, self.repo))
                started = time.perf_counter()
                try:
                    new, files = await to_the_end(
                        in_git_thread(
                            self.owner.repos,
                            self._write,
                            changes,
                            list(authors.values()),
                            grant,
                            states,
                        )
                    )
                except NothingToCommit:
                    self.committed_states.update(states)
                    await self._settle_recovered(rooms, changes)
                    await self._close_held(clashing, grant)
                    if self.owner.leases is None:
                        await self._settle_authors(*self._with_rescued(authors, changes))
                    elif any(self._rescued):
                        await self._settle_authors(*self._with_rescued({}, {}))
                    # (in a cluster, the node that committed the text may not have named
                    # them: they wait for the file's next commit rather than be forgotten)
                    return
                except RefMoved as moved:
                    if moved.current is None:
                        await self._restore()
                    else:
                        await self._reconcile(moved.current, grant)
                    # a document the move made no text file is closed: nothing of it is
                    # committed (see retire)
                    # (nor an empty file where the move deleted one)
                    rooms = {
                        path: room
                        for path, room in rooms.items()
                        if not room.retired and not (path in self.emptied and not str(room.text))
                    }
                    continue
                if self.owner.observe_commit is not None:
                    self.owner.observe_commit(time.perf_counter() - started)
                self.committed_states.update(states)
                self._committed(new, files, list(authors))
                await self._settle_recovered(rooms, changes)
                await self._close_held(clashing, grant)
                await self._settle_authors(*self._with_rescued(authors, changes))
                return
            raise RuntimeError(f"{self.name} kept moving while committing")
        except BaseException:
            for path, room in rooms.items():  # keep them pending
                self.dirty.setdefault(path, room)
            for user, identity in authors.items():
                self.authors.setdefault(user, identity)
            raise
        finally:
            self._naming = None

    async def _take_authors(self, paths: list[str] | None = None) -> bool:
        """Take who wrote to the branch (to ``paths``, or any file) since their commit, as
        the store keeps it (see :meth:`_authors_of`): in a cluster, on whichever node; on
        one node, also before a crash (what a recovery at start commits is its typists').
        One node knows its own writers besides: a store that cannot say costs it only a log
        line (and the answer is False)."""
        try:
            await self.owner.store.take_authors(f"{self.repo}/{self.branch}", paths)
        except Exception as exc:
            if self.owner.leases is not None:
                raise
            log.warning("%s: the store could not say who wrote (%s)", self.name, exc)
            return False
        return True

    def _authors_of(self, paths: list[str]) -> list[str]:
        """Of those the last take gave, the writers of ``paths`` (the files a commit holds,
        known only once its text is taken: files changed while the take was awaited
        among them)."""
        return self.owner.store.authors_of(f"{self.repo}/{self.branch}", paths)

    def _with_rescued(
        self, authors: Collection[str], paths: Collection[str]
    ) -> tuple[list[str], list[str]]:
        """``authors`` and ``paths`` of a commit that landed, with the writers and the files
        of the rescues made under it (see :meth:`rescue_landed`): what it settles."""
        users, kept = self._rescued
        self._rescued = (set(), set())
        return list(dict.fromkeys([*authors, *sorted(users)])), [*paths, *sorted(kept)]

    async def rescuers(self, path: str) -> tuple[list[str], list[str]]:
        """Who typed the live text of ``path`` that a :class:`Rescue` commits, as the
        regular commits name them: the people this process saw write to the branch since
        its last commit (and those a commit under way took), then those the store kept as
        writers of ``path`` (before a crash; in a cluster, on any node). Returns the users
        to name, and those the store gave, to settle once the rescue commit has landed
        (:meth:`rescue_landed`)."""
        users = dict.fromkeys(self.authors)
        if self._naming is not None:  # a commit under way took the store's already
            users.update(dict.fromkeys(self._naming))
        elif not await self._take_authors([path]):
            return list(users), []
        stored = self._authors_of([path])
        users.update(dict.fromkeys(stored))
        return list(users), stored

    async def rescue_landed(self, stored: list[str], path: str) -> None:
        """The rescue commit of ``path`` naming ``stored`` (see :meth:`rescuers`) has
        landed: the store may forget what they wrote to it. Under a commit, that is left
        to the commit (the store's take is the commit's), once it lands."""
        if self._naming is not None:
            self._rescued[0].update(stored)
            self._rescued[1].add(path)
            return
        await self._settle_authors(stored, [path])

    async def _settle_authors(self, users: list[str], paths: list[str]) -> None:
        """The commit of ``paths`` naming ``users`` landed: the store may forget what they
        wrote to those files (see ``Store.settle_authors``); one that cannot say so keeps
        them for the next."""
        try:
            await self.owner.store.settle_authors(f"{self.repo}/{self.branch}", users, paths)
        except Exception as exc:
            log.warning("%s: the store could not settle who wrote (%s)", self.name, exc)

    async def _hold_shrinking(self, rooms: dict[str, Room], changes: dict[str, bytes]) -> None:
        """Take out of ``changes`` the documents whose history lacks edits their branch
        already committed (``Room.lacking``: the store went back to an older state), and
        those recovered after damage whose text would shrink their file drastically (see
        :data:`SHRINK_RATIO`); they are reported and held until their history is whole
        again or their text grows back (clients that held the lost edits reconnect), or an
        operator decides (``collab store repair --reseed``; ``--accept`` for a recovered
        one)."""
        suspect = [path for path in changes if rooms[path].recovered or rooms[path].lacking]
        if not suspect:
            return
        synced = self.synced
        heads = await in_repo(
            self.owner.repos,
            self.repo,
            lambda repo: {path: read_blob(repo, synced, path) for path in suspect},
        )
        for path in suspect:
            room = rooms[path]
            lacking = room.lacking is not None and history_lost(room.doc.get_state(), room.lacking)
            if not lacking:
                room.lacking = None
            new, old = len(changes[path]), len(heads[path] or b"")
            shrinking = room.recovered and new < old * SHRINK_RATIO and old - new >= SHRINK_BYTES
            if not (lacking or shrinking):
                self.held.pop(path, None)
                continue
            del changes[path]
            if self.held.get(path) != (new, old):
                self.held[path] = (new, old)
                cause = "history lost" if lacking else "shrinking"
                log.warning(
                    "%s%s: %s, and its %d bytes would replace %d at the branch head: commit "
                    "held (reconnecting clients may bring the lost edits back; else "
                    "`collab store repair --reseed`%s)",
                    self.prefix,
                    path,
                    "its history lacks edits the branch already committed"
                    if lacking
                    else "recovered after damage",
                    new,
                    old,
                    "" if lacking else " or `--accept`",
                )
                self.owner.events.publish(
                    self.repo,
                    {
                        "kind": "held",
                        "branch": self.branch,
                        "path": path,
                        "size": new,
                        "head_size": old,
                        "cause": cause,
                    },
                )

    def _hold_behind(
        self, rooms: dict[str, Room], changes: dict[str, bytes], states: dict[str, bytes]
    ) -> None:
        """In a cluster, take out of ``changes`` the documents this node holds behind what
        their branch already committed: another node committed edits this node's copy has
        not received yet (it was paused, or its link to Redis was down). Committed, their
        older text would take those edits out of the branch until the next commit. They stay
        pending: the edits they are waiting for come from the shared log, and mark them
        changed again when they arrive."""
        if self.owner.leases is None:
            return
        for path in list(changes):
            committed = self.committed_states.get(path)
            room = rooms[path]
            if committed is None or room.lacking is not None or room.recovered:
                continue  # (a history that lost edits is held by _hold_shrinking)
            if history_lost(states[path], committed):
                del changes[path]
                self.dirty.setdefault(path, room)
                log.info(
                    "%s%s: this node has not yet received edits the branch already holds; "
                    "committed once they arrive",
                    self.prefix,
                    path,
                )

    def _hold_clashing(self, changes: dict[str, bytes]) -> dict[str, str]:
        """Take out of ``changes`` the documents that lie below another one of them
        (``notes/todo.md`` below ``notes``, neither a file in git yet): both cannot be files,
        and one such pair must not keep the rest of the branch from being committed. The
        one below is not committed, the rest is; returns each such path and the one above
        it, for :meth:`_close_held` once the commit is made."""
        written = set(changes)
        held: dict[str, str] = {}
        for path in sorted(written):
            above = next((p for p in _parents(path) if p in written), None)
            if above is not None:
                del changes[path]
                held[path] = above
        return held

    async def _close_held(self, held: dict[str, str], grant: Grant | None) -> None:
        """The documents :meth:`_hold_clashing` took out of the commit just made (or found
        nothing to make): one below a file the branch holds now can be no file on it any
        more, and is closed, its text kept on a branch of its own (as :meth:`_close_blocked`
        does). The others (the one above them made no file: it is empty, say) keep their
        text in their documents and the store, and the next start looks for them again."""
        if not held:
            return
        left = dict.fromkeys(held, b"")
        await self._close_blocked(left, grant)
        for path in left:
            self.owner.incomplete = True  # left in the store: looked for at the next start
            log.warning(
                "%s%s: lies below %s, open as a file too (not committed as one): its text "
                "is not committed (move it, or empty and close %s)",
                self.prefix,
                path,
                held[path],
                held[path],
            )

    async def _close_blocked(self, changes: dict[str, bytes], grant: Grant | None) -> None:
        """Take out of ``changes`` the documents that the commit they would go on has no
        place for as files (``blocked_at``: ``commit_changes`` would leave their text out):
        one held below another (see :meth:`_hold_clashing`) that has been committed as a
        file since, say, or one recovered at start below a file committed before the
        crash. They are closed, and their text is kept on a branch of its own, as those a
        move puts something in the way of are (see :meth:`_put_in_the_way`)."""
        synced = self.synced
        if not changes:
            return
        blocked = await in_repo(self.owner.repos, self.repo, blocked_at, synced, list(changes))
        if not blocked:
            return
        for path in blocked:
            del changes[path]
        await self.retire(blocked, {}, Rescue(self, synced), in_the_way=blocked)
        await self.record_taken(grant)

    def _hold_refused_by_fsck(self, changes: dict[str, bytes]) -> None:
        """Take out of ``changes`` the ``.gitmodules`` and ``.gitattributes`` (in any
        spelling) whose text git's fsck refuses (a submodule URL or path that reads as an
        option, an attribute line too long to parse): committed, it would make the
        repository fail ``git fsck``, and every clone that checks what it fetches. The file
        keeps its last commit; its text stays in its document and the store, and is
        committed once it passes."""
        for path in list(changes):
            problem = file_problem(path, changes[path])
            if problem is None:
                self.refused.pop(path, None)
                continue
            size = len(changes.pop(path))
            self.owner.incomplete = True  # left in the store: looked for at the next start
            if self.refused.get(path) != problem.msg_id:
                self.refused[path] = problem.msg_id
                log.warning(
                    "%s%s: not committed, git's fsck would refuse it (%s: %s)",
                    self.prefix,
                    path,
                    problem.msg_id,
                    problem.message,
                )
                self.owner.events.publish(
                    self.repo,
                    {
                        "kind": "held",
                        "branch": self.branch,
                        "path": path,
                        "size": size,
                        "cause": "fsck",
                        "problem": problem.msg_id,
                    },
                )

    async def _settle_recovered(self, rooms: dict[str, Room], changes: dict[str, bytes]) -> None:
        """The recovered documents in ``changes`` now match their branch: no longer held."""
        for path in changes:
            room = rooms[path]
            if room.recovered:
                room.recovered = False
                self.held.pop(path, None)
                await self.owner.store.clear_recovered(room.key)

    async def _restore(self) -> None:
        """The branch was deleted outside the engine while its live documents held edits:
        put it back where they were last committed, so that the edits land on it (the engine
        itself refuses to delete a branch with open documents)."""
        if self.deleting:
            return
        try:
            await in_repo(self.owner.repos, self.repo, create_branch, self.branch, self.synced)
        except BranchExists:
            return  # created again meanwhile: the next attempt merges with it
        except RefClash as exc:
            if self.owner.leases is not None:
                raise  # (the other nodes' rooms would write their text back)
            # a branch made outside holds the name's place: the edits, durable in the store,
            # are committed on a branch of their own, and the documents closed
            log.error("%s: deleted outside the engine, and cannot be restored: %s", self.name, exc)
            self.deleting = True
            task = asyncio.create_task(self.owner.forget_deleted(self.repo, self.branch))
            self.owner._checks.add(task)
            task.add_done_callback(self.owner._checks.discard)
            raise ProtocolError(ErrorCode.NOT_FOUND, f"{self.name} was deleted") from None
        log.warning("%s: deleted outside the engine with live edits; restored", self.name)
        self.owner.events.publish(
            self.repo,
            {
                "kind": "ref",
                "branch": self.branch,
                "old": None,
                "new": hexsha(self.synced),
                "cause": "restored",
            },
        )

    def _write(
        self,
        changes: dict[str, bytes],
        authors: list[Identity],
        grant: Grant | None = None,
        states: dict[str, bytes] | None = None,
    ) -> tuple[bytes, list[str]]:
        """Commit ``changes``; the new commit and the files it changed (a document marked
        changed may hold its committed text again: it is not named)."""
        repo = self.owner.repos.open(self.repo)
        lines = [author_line(identity.user) for identity in authors] or [ENGINE_AUTHOR]
        # only what changes is written: a document back at its committed text, or of a
        # file the branch lacks that is still empty (which makes no file), is left out
        same = unchanged_at(repo, self.synced, changes)
        files = sorted(path for path in changes if path not in same)
        changes = {path: changes[path] for path in files}
        # the objects are written (and fsynced) outside the branch's fence: a node stopped
        # while it writes them keeps no other node from the branch past its lease
        written: WrittenCommit | None
        try:
            written = write_commit(
                repo,
                self.branch,
                changes,
                message=commit_message(files, lines[1:]),
                author=lines[0],
                committer=ENGINE_AUTHOR,
                expected=self.synced,
                text_only=True,
            )
        except NothingToCommit:
            written = None  # (raised below, once the states are recorded)
        with fence_for(repo, self.branch, grant):
            # before the branch moves: no commit of the documents is left without its record
            # (the documents' stores hold it durably already, see _commit)
            record_synced_state(repo, self.branch, states or {})
            if written is None:
                raise NothingToCommit(f"the changes leave {self.branch} as it is")
            commit = written
            new = move_as_synced(
                repo,
                self.branch,
                lambda record: land_commit(
                    repo, self.branch, commit, self.synced, before_move=record
                ),
            )
        combine_packs(repo)
        return new, files

    def _committed(self, new: bytes, files: list[str], users: list[str]) -> None:
        old, self.synced = self.synced, new
        log.info(
            "%s: committed %s by %s (%s)",
            self.name,
            new[:12].decode(),
            ", ".join(users) or "collab",
            ", ".join(files),
        )
        self.owner.events.publish(
            self.repo,
            {
                "kind": "commit",
                "branch": self.branch,
                "commit": hexsha(new),
                "parents": [hexsha(old)],
                "authors": users,
                "files": files,
            },
        )

    # -- the ref moved outside the engine ----------------------------------------------------

    async def catch_up(self) -> None:
        """If the branch moved since the live documents last matched it, merge the move
        into them as text edits."""
        head = await in_git_thread(self.owner.repos, self.owner.head, self.repo, self.branch)
        if head is None or head == self.synced:
            return
        async with self.lock:
            if self.owner.leases is None:
                head = await in_git_thread(
                    self.owner.repos, self.owner.head, self.repo, self.branch
                )
                if head is not None and head != self.synced:
                    await self._reconcile(head)
                return
            # in a cluster: another node's commit of the shared text is adopted; a move
            # outside the engine is merged into the documents by the lease holder alone
            await self._adopt_cluster_commit()
            head = await in_git_thread(self.owner.repos, self.owner.head, self.repo, self.branch)
            if head is None or head == self.synced:
                return
            grant = await self.lease()
            if grant is None:
                return
            async with self.holding(grant):
                head = await in_git_thread(
                    self.owner.repos, self.owner.head, self.repo, self.branch
                )
                if head is not None and head != self.synced:
                    await self._reconcile(head, grant)

    async def catch_up_held(self, grant: Grant | None) -> None:
        """:meth:`catch_up`, the lock (and in a cluster the lease ``grant``) held already."""
        if self.owner.leases is not None:
            await self._adopt_cluster_commit()
        head = await in_git_thread(self.owner.repos, self.owner.head, self.repo, self.branch)
        if head is not None and head != self.synced:
            await self._reconcile(head, grant)

    async def take_move(self, head: bytes, grant: Grant | None) -> None:
        """Merge into the live documents a move of the branch the engine made itself (a
        merge), lock held, as a move made outside it is merged (:meth:`catch_up`): a crash
        on the way is finished at the next start. The move's maker tells of it."""
        await self._reconcile(head, grant, announce=False)

    async def _reconcile(
        self, head: bytes | None, grant: Grant | None = None, *, announce: bool = True
    ) -> None:
        """Apply the change ``synced -> head`` to the live documents (lock held). If ``head``
        does not descend from ``synced`` (a force push, a reset), see :meth:`_follow_rewrite`.
        ``announce``: log the move and publish its ``ref`` event (one from outside).

        In a cluster, under the branch's lease ``grant``: a node whose lease another node
        has taken since (it expired: a paused process) raises ``Fenced`` before it changes
        the documents, and cannot record the move as synced after they were changed."""
        if head is None:
            raise RuntimeError(f"branch {self.branch} of {self.repo} was deleted")
        if grant is not None:
            await in_repo(self.owner.repos, self.repo, claim, self.branch, grant.token)
        base_gone = False

        def read(repo: Repo) -> tuple[bytes, list[FileChange], bool, set[str], bytes | None]:
            nonlocal base_gone
            old = _finish_commit(repo, self.branch, head, self.synced)
            try:
                if not is_stored(repo, old):
                    raise KeyError(old)
                changes = changed_files(repo, old, head)
            except KeyError:
                # the repository was replaced (or its history rewritten and pruned): no
                # base to merge from (see _against_head)
                base_gone = True
                return old, [], False, set(), None
            maybe_gone = [c.path for c in changes if c.new is None or not is_text(c.new)]
            gone = not_text_at(repo, head, maybe_gone)
            # the marks worth looking for: those of a merge a crash interrupted (a mark of
            # an older merge of the same commit, before the branch went back, is not this
            # one's), if its commit is on the way to head
            merging = read_merging(repo, self.branch)
            if merging is not None and not _on_the_way(repo, old, merging, head):
                merging = None
            if old != head:
                set_merging(repo, self.branch, head)
            return old, changes, _descends(repo, old, head), gone, merging

        old, changes, forward, not_text, interrupted = await in_repo(
            self.owner.repos, self.repo, read
        )
        self.synced = old
        self.emptied = set()
        if old == head:  # an interrupted commit of the documents' own text: nothing to merge
            return
        rescue = Rescue(self, head, base_gone=True) if base_gone else Rescue(self, old)
        if base_gone:
            changes, not_text = await self._against_head(head)
            log.error(
                "%s: %s (was it replaced?); they now read as the branch's head %s, and live "
                "text that differs from it is kept on a branch of its own",
                self.name,
                "the repository holds no record of the commit the live documents matched"
                if old == UNKNOWN_COMMIT
                else f"the commit the live documents matched ({old[:12].decode()}) is not in "
                "the repository any more",
                head[:12].decode(),
            )
        # a file the move made larger than a document may open from git: closed as one
        # that is no text (a merge of it into the document would hold the whole file, for
        # every peer, past the size the documents are kept to)
        limit = self.owner.rooms.max_file
        too_large = {c.path for c in changes if c.new is not None and len(c.new) > limit}
        not_text = not_text | too_large
        committed = {change.path: change.old for change in changes if change.path in not_text}
        in_the_way = set() if base_gone else await self._put_in_the_way(changes, head)
        await self.retire(not_text | in_the_way, committed, rescue, too_large, in_the_way)
        changes = [change for change in changes if change.path not in not_text]
        renamed: dict[str, str] = {}
        if forward:
            # open documents of renamed files, without edits of their own: their editors are
            # told where the file went too (the merge below empties them as any deletion)
            renamed.update(self._renamed_unedited(changes))
            moves = await self._renamed_with_edits(changes, head, interrupted)
            # the new path's change is merged as any other (into its document, if it has
            # one), then the old path's live edits on top of it
            moved = {gone.path for gone, _added, _room, _base in moves}
            rest = [change for change in changes if change.path not in moved]
            await self.merge_into_live(rest, head, interrupted)
            renamed.update(await self._follow_renames(moves, head, interrupted))
        else:
            await self._follow_rewrite(
                old, changes, head, interrupted == head, rescue, base_known=not base_gone
            )
        await self.record_taken(grant)
        await in_repo(self.owner.repos, self.repo, _set_synced, self.branch, head, grant)
        await in_repo(self.owner.repos, self.repo, clear_merging, self.branch, head)
        self.synced = head
        if base_gone:  # recorded: its documents are of the repository's history now
            self.owner.unrecorded.clear(self.repo, self.branch)
        if not announce:
            return
        log.info(
            "%s: %s outside the engine to %s; merged%s",
            self.name,
            "moved" if forward else "rewound",
            head[:12].decode(),
            "" if rescue.name is None else f" (live edits it would drop kept on {rescue.name})",
        )
        event: dict[str, object] = {
            "kind": "ref",
            "branch": self.branch,
            "old": None if old == UNKNOWN_COMMIT else hexsha(old),
            "new": hexsha(head),
            "cause": "external",
        }
        if not forward:
            event["rewound"] = True
        if not forward or rescue.name is not None:
            event["rescued"] = rescue.name
        if renamed:
            event["renamed"] = renamed
        self.owner.events.publish(self.repo, event)

    def _renamed_unedited(self, changes: list[FileChange]) -> dict[str, str]:
        """The text files of ``changes`` that the move renamed (as :meth:`_renamed_with_edits`
        finds them) whose documents are open here and hold no edits not committed: old
        path to new."""
        gone = [
            change
            for change in changes
            if change.new is None
            and change.old is not None
            and is_text(change.old)
            and (room := self.owner.rooms.get_key(self.prefix + change.path)) is not None
            and str(room.text).encode("utf-8") == change.old
        ]
        added = [
            change
            for change in changes
            if change.old is None and change.new and is_text(change.new)
        ]
        renamed: dict[str, str] = {}
        for change in gone:
            assert change.old is not None
            new = _renamed_to(change.old, added)
            if new is not None:
                renamed[change.path] = new.path
        return renamed

    async def _renamed_with_edits(
        self, changes: list[FileChange], head: bytes, interrupted: bytes | None
    ) -> list[tuple[FileChange, FileChange, Room, bytes]]:
        """The text files of ``changes`` that the move renamed (deleted, and added elsewhere
        with 50% or more of their content, git's default rename threshold) while their
        loaded documents hold edits not committed yet: (the deletion, the addition, the
        document, the text its edits were made on).

        ``interrupted`` (see :meth:`merge_into_live`): a document holding its mark had the
        changes up to it merged, its edits carried already if it renamed the file (the
        document is empty): its edits are those since the file at that commit."""
        gone: list[tuple[FileChange, Room, bytes]] = []
        for change in changes:
            room = self.owner.rooms.get_key(self.prefix + change.path)
            if (
                room is None
                or change.new is not None
                or change.old is None
                or not is_text(change.old)
            ):
                continue
            base = change.old
            if interrupted is not None and room.has_mark(mark_id(interrupted, change.path)):
                if interrupted == head:
                    continue  # merged, carried: nothing left to do but record it
                blob = await in_repo(
                    self.owner.repos, self.repo, read_blob, interrupted, change.path
                )
                if blob is None or not is_text(blob):
                    continue
                base = blob
            if str(room.text).encode("utf-8") != base:
                gone.append((change, room, base))
        added = [
            change
            for change in changes
            if change.old is None
            and change.new
            and is_text(change.new)
            and _names_a_document(change.path)
        ]
        pairs = []
        for change, room, base in gone:
            assert change.old is not None
            new = _renamed_to(change.old, added)
            if new is not None:
                pairs.append((change, new, room, base))
        return pairs

    async def _follow_renames(
        self,
        moves: list[tuple[FileChange, FileChange, Room, bytes]],
        head: bytes,
        interrupted: bytes | None,
    ) -> dict[str, str]:
        """Carry the live edits of each renamed file to its new path, as ``git merge`` does:
        they are merged (three-way, the old file the base) into the file the move put at
        the new path, whose document gets the result, and the old path's document is
        emptied (the file is gone there). Returns the old paths and the new.

        A new path that cannot be a live document (over the size limit, say) takes no
        edits: the old path's deletion is merged into its document as any other change
        (``interrupted``: see :meth:`merge_into_live`)."""
        renamed: dict[str, str] = {}
        unmoved: list[FileChange] = []
        durable: list[Awaitable[None]] = []
        self.reconciling = True
        try:
            for gone, added, old_room, edited in moves:
                assert added.new is not None
                base, theirs = edited.decode("utf-8"), added.new.decode("utf-8")
                merged, conflicted = merge_text(base, str(old_room.text), theirs, characters=True)
                doc_id = DocId.parse(self.prefix + added.path)
                self.check_lease()
                try:
                    async with self.owner.rooms.borrow(doc_id) as new_room:
                        mark = mark_id(head, added.path)
                        durable.append(
                            _merge_into(new_room, added.new, merged.encode(), mark, self.fence)
                        )
                        self.taken[added.path] = new_room.doc.get_state()
                except ProtocolError as exc:
                    log.warning(
                        "%s: renamed to %s by the move, which cannot be a live document (%s): "
                        "its live edits stay at the old path",
                        old_room.key,
                        added.path,
                        exc.message,
                    )
                    unmoved.append(gone)
                    continue
                except Exception as exc:
                    if not self._document_failure(exc):
                        raise
                    self._hold_out(added.path, head, exc)
                    unmoved.append(gone)
                    continue
                if conflicted:
                    log.warning(
                        "%s: renamed to %s by the move; its live edits conflict, markers written",
                        old_room.key,
                        added.path,
                    )
                durable.append(
                    replace_text(
                        old_room,
                        "",
                        origin=Origin.GIT,
                        mark=mark_id(head, gone.path),
                        fence=self.fence,
                    )
                )
                self.taken[gone.path] = old_room.doc.get_state()
                self.dirty.pop(gone.path, None)  # deleted: no commit brings it back empty
                self.emptied.add(gone.path)
                renamed[gone.path] = added.path
                log.info("%s: renamed to %s; live edits carried there", old_room.key, added.path)
            await asyncio.shield(asyncio.gather(*durable))  # (their futures are the rooms')
        finally:
            self.reconciling = False
        if unmoved:
            await self.merge_into_live(unmoved, head, interrupted)
        return renamed

    async def _put_in_the_way(self, changes: list[FileChange], head: bytes) -> set[str]:
        """The live documents of files the branch does not hold (new files, not committed
        yet: no change of the move names them) whose place the move took: it made one of
        their directories a file, a link or a submodule (``notes`` for ``notes/todo.md``),
        or their path a directory (``notes/todo.md`` added, ``notes`` open). Their text
        could never be committed there. (A link or a submodule is no change of text
        files: every such document is looked up in ``head``.)"""
        changed = {change.path for change in changes}
        candidates = sorted(path for path in await self._every_live_path() if path not in changed)
        if not candidates:
            return set()
        return await in_repo(self.owner.repos, self.repo, blocked_at, head, candidates)

    async def retire(
        self,
        paths: set[str],
        committed: Mapping[str, bytes | None] | None = None,
        rescue: Rescue | None = None,
        too_large: Collection[str] = (),
        in_the_way: Collection[str] = (),
    ) -> None:
        """Close the live documents of ``paths``, which the branch no longer holds as text
        files (a push made one a symbolic link, a directory, a binary file...), holds as
        files too large to open (``too_large``), or has no place for as files any more
        (``in_the_way``: see :meth:`_put_in_the_way`): their text is not committed over
        what the push put there.

        With ``rescue`` and ``committed`` (each path's file at the commit the documents
        last matched, ``rescue.base``), a document whose text differs from it (live edits
        not committed yet; loaded, or held in the store) is first committed by ``rescue``,
        on a branch of its own: no live text is dropped uncommitted."""
        for path in sorted(await self.live_paths(paths)):
            key = self.prefix + path
            room = self.owner.rooms.get_key(key)
            kept = None
            if rescue is not None and committed is not None:
                base = (committed.get(path) or b"").decode("utf-8", "replace")
                if room is not None:
                    kept = await _keep_live(room, base, rescue)
                elif (stored := await self.owner.stored_text(key)) is not None and stored != base:
                    # not loaded: held in the store (below another document, say)
                    await rescue.keep(path, stored, no_text=True)
                    kept = rescue.name
            self.dirty.pop(path, None)
            if path in too_large:
                code = ErrorCode.TOO_LARGE
                reason = (
                    f"{path} is over {self.owner.rooms.max_file} bytes on {self.branch} now, "
                    "too large to edit live"
                )
            elif path in in_the_way:
                code = ErrorCode.NOT_TEXT
                reason = (
                    f"{path} cannot be a file on {self.branch} now: a file, a link or a "
                    "directory is in its way"
                )
            else:
                code = ErrorCode.NOT_TEXT
                reason = f"{path} is no longer a text file on {self.branch}"
            if kept is not None:
                reason += f"; its live edits were kept on {kept}"
            if room is None:  # (the rooms log those they close)
                log.info("%s: closed (held in the store only): %s", key, reason)
            await self.owner.rooms.retire(key, code, reason)
            if rescue is not None:  # (a move closes it, and records what it took)
                # its history is gone on purpose: opened again, it is no document the store
                # lost (see Rooms._history_gone)
                self.taken[path] = EMPTY_STATE

    async def _follow_rewrite(
        self,
        old: bytes,
        changes: list[FileChange],
        head: bytes,
        marked: bool,
        rescue: Rescue,
        *,
        base_known: bool = True,
    ) -> None:
        """The branch moved from ``old`` to a commit that does not descend from it: make each
        live document read as the new head. Pending live edits are kept where they merge
        cleanly onto it (three-way, ``old`` the base); where they do not, the live text is
        first committed on a branch of its own by ``rescue`` (``<branch>-rescued-<old>``),
        and the document then reads as the new head. No live text is dropped uncommitted.
        Without ``base_known`` (``old`` is gone from the repository), nothing merges: live
        text that is not the new head's is kept that way."""
        live = set(await self.live_paths([change.path for change in changes]))
        durable: list[Awaitable[None]] = []
        self.reconciling = True
        try:
            for change in changes:
                if change.path not in live or not (is_text(change.old) and is_text(change.new)):
                    continue
                self.check_lease()
                key = self.prefix + change.path
                mark = mark_id(head, change.path)
                room = self.owner.rooms.get_key(key)
                if room is not None:
                    durable.append(
                        await _rewrite_into(room, change, rescue, mark, marked, base_known)
                    )
                    self.taken[change.path] = room.doc.get_state()
                else:
                    async with contextlib.AsyncExitStack() as stack:
                        borrowed = await self._borrow_for_move(stack, change.path, head)
                        if borrowed is None:
                            continue
                        durable.append(
                            await _rewrite_into(borrowed, change, rescue, mark, marked, base_known)
                        )
                        self.taken[change.path] = borrowed.doc.get_state()
            await asyncio.shield(asyncio.gather(*durable))  # (their futures are the rooms')
        finally:
            self.reconciling = False

    async def record_taken(self, grant: Grant | None = None) -> None:
        """Record the state vectors of the documents a move was merged into (durable by
        now), before the move is recorded as synced (see ``gitsync.objects.synced_state``)."""
        taken, self.taken = self.taken, {}
        if not taken:
            return

        def record(repo: Repo) -> None:
            with fence_for(repo, self.branch, grant):
                record_synced_state(repo, self.branch, taken)

        await in_repo(self.owner.repos, self.repo, record)
        self.committed_states.update(taken)

    async def _against_head(self, head: bytes) -> tuple[list[FileChange], set[str]]:
        """Every live document of this branch (loaded or stored) as a change from nothing
        to its file at ``head``, and those whose path holds no text file there: how the
        documents are made to read as ``head`` when the commit they matched is gone."""
        paths = sorted(await self._every_live_path())

        def read(repo: Repo) -> tuple[list[FileChange], set[str]]:
            gone = not_text_at(repo, head, paths)
            changes = [
                FileChange(path, None, None if path in gone else read_blob(repo, head, path))
                for path in paths
            ]
            return changes, gone

        return await in_repo(self.owner.repos, self.repo, read)

    async def live_paths(self, paths: Iterable[str]) -> list[str]:
        """Those of ``paths`` that have a live document on this branch, loaded or stored."""
        live = await self._every_live_path()
        return [path for path in paths if path in live]

    async def _every_live_path(self) -> set[str]:
        """The path of every live document of this branch, loaded or stored."""
        cut = len(self.prefix)
        stored = {key[cut:] for key in await self.owner.store.keys(self.prefix)}
        return stored | {room.key[cut:] for room in self.owner.rooms.loaded(self.prefix)}

    async def merge_into_live(
        self,
        changes: list[FileChange],
        head: bytes | None = None,
        interrupted: bytes | None = None,
    ) -> None:
        """Merge each ``old -> new`` file change three-way into the branch's live document
        of that path, loaded or stored (documents never opened will seed from git), and
        wait until the edits are durable. Binary files have no live documents.

        With ``head``, the commit the changes lead to, each document is marked with it
        (:mod:`collab.live.marks`). ``interrupted``: a commit up to ``head`` whose merge a
        crash may have interrupted; a document that holds its mark had the changes up to
        it, and is merged from there (not at all, if it is ``head``)."""
        live = set(await self.live_paths([change.path for change in changes]))
        durable: list[Awaitable[None]] = []
        self.reconciling = True
        try:
            for change in changes:
                if change.path not in live or not (is_text(change.old) and is_text(change.new)):
                    continue
                self.check_lease()  # the node that took it over merges what is left
                key = self.prefix + change.path
                room = self.owner.rooms.get_key(key)
                if room is not None:
                    durable.append(await self._merge_change(room, change, head, interrupted))
                    self.taken[change.path] = room.doc.get_state()
                else:
                    async with contextlib.AsyncExitStack() as stack:
                        borrowed = await self._borrow_for_move(stack, change.path, head)
                        if borrowed is None:
                            continue
                        durable.append(
                            await self._merge_change(borrowed, change, head, interrupted)
                        )
                        self.taken[change.path] = borrowed.doc.get_state()
                emptied = self.dirty.get(change.path)
                if change.new is None and emptied is not None and not str(emptied.text):
                    del self.dirty[change.path]  # deleted: no commit brings it back empty
                if change.new is None:
                    self.emptied.add(change.path)
            await asyncio.shield(asyncio.gather(*durable))  # (their futures are the rooms')
        finally:
            self.reconciling = False

    async def _borrow_for_move(
        self, stack: contextlib.AsyncExitStack, path: str, head: bytes | None
    ) -> Room | None:
        """The document of ``path``, loaded to take a move of the branch (to ``head``) and
        kept loaded as long as ``stack``; ``None`` if it fails to load: it is held out (see
        :meth:`_hold_out`) and the move goes on into the branch's other documents, which
        one document must never keep from their branch's changes. A failure of the store,
        the disk or the branch itself is raised: the move is merged later, whole."""
        try:
            return await stack.enter_async_context(
                self.owner.rooms.borrow(DocId.parse(self.prefix + path))
            )
        except Exception as exc:
            if not self._document_failure(exc):
                raise
            self._hold_out(path, head, exc)
            return None

    def _document_failure(self, exc: Exception) -> bool:
        """Whether ``exc``, raised loading one of the branch's documents, is that document's
        own failure (its history is damaged, or cannot be made a room), not the store's,
        the disk's or the branch's."""
        if _outage(exc) or f"{self.repo}/{self.branch}" in self.owner.rooms.damaged:
            return False
        return not isinstance(exc, ProtocolError) or exc.code not in _NOT_THE_DOCUMENTS

    def _hold_out(self, path: str, head: bytes | None, exc: Exception) -> None:
        """Log that the document of ``path`` could not take a move of the branch (to
        ``head``), and quarantine it for as long as the server runs (``Rooms.hold_out``):
        its text lacks the move, and committed it would undo the move in its file."""
        doc_id = DocId.parse(self.prefix + path)
        why = exc.message if isinstance(exc, ProtocolError) else repr(exc)
        to = "" if head is None else f" to {head[:12].decode()}"
        log.error(
            "%s: failed to load (%s), so the move of %s%s is merged into the branch's other "
            "documents and not into it; it is quarantined until the server restarts (then "
            "served with a text that lacks the move, which its next commit would undo: "
            "`collab store repair --reseed %s`, the server stopped, seeds it again from the "
            "branch)",
            doc_id,
            why,
            self.name,
            to,
            doc_id,
            exc_info=not isinstance(exc, ProtocolError),
        )
        reason = f"failed to load ({why}); the move{to} was not merged into it"
        self.owner.rooms.hold_out(doc_id, reason)

    async def _merge_change(
        self, room: Room, change: FileChange, head: bytes | None, interrupted: bytes | None
    ) -> asyncio.Future[None]:
        if head is None:
            return _merge_into(room, change.old, change.new, None, self.fence)
        base = change.old
        if interrupted is not None and room.has_mark(mark_id(interrupted, change.path)):
            if interrupted == head:
                return _done()
            base = await in_repo(self.owner.repos, self.repo, read_blob, interrupted, change.path)
            if base is not None and not is_text(base):
                base = change.old
        return _merge_into(room, base, change.new, mark_id(head, change.path), self.fence)


def _renamed_to(old: bytes, added: list[FileChange]) -> FileChange | None:
    """Of the files ``added``, the one a file of ``old`` content was renamed to (the most
    like it, at git's default threshold or above), taken out of ``added``; None if none."""
    scored = [(similarity(old, change.new or b""), change.path, change) for change in added]
    best = max(scored, default=None, key=lambda item: item[:2])
    if best is None or best[0] < RENAME_SCORE:
        return None
    added.remove(best[2])
    return best[2]


def _names_a_document(path: str) -> bool:
    """Whether ``path`` (read from git) can be a live document's."""
    try:
        return validate_path(path) == path
    except ProtocolError:
        return False


def _parents(path: str) -> list[str]:
    """The directories ``path`` lies in: ``a/b/c`` -> ``a``, ``a/b``."""
    parts = path.split("/")
    return ["/".join(parts[:n]) for n in range(1, len(parts))]


def _merge_into(
    room: Room, old: bytes | None, new: bytes | None, mark: int | None, fence: Fence | None
) -> asyncio.Future[None]:
    """Rebase the live text onto ``old -> new``: whoever typed since keeps their edits (a
    line both changed is merged character by character; only where the characters conflict
    too are markers written); the edit carries ``mark``, and is made under the lease
    ``fence``."""
    base = (old or b"").decode("utf-8")
    theirs = (new or b"").decode("utf-8")
    live = str(room.text)
    if live == base:
        merged, conflicted = theirs, False
    else:
        merged, conflicted = merge_text(base, live, theirs, characters=True)
    if conflicted:
        log.warning("%s: the change conflicts with live edits; markers written", room.key)
    return replace_text(room, merged, origin=Origin.GIT, mark=mark, fence=fence)


MARKED_CHAIN = 64
"""Commits between the synced one and a new head that are looked for as marks."""


def _on_the_way(repo: Repo, old: bytes, commit: bytes, head: bytes) -> bool:
    """Whether ``commit`` is after ``old`` and at or before ``head`` on ``head``'s line of
    first parents, which comes down to ``old`` within ``MARKED_CHAIN`` commits."""
    seen = False
    at = head
    for _ in range(MARKED_CHAIN):
        if at == old:
            return seen
        seen = seen or at == commit
        parents = getattr(repo[ObjectID(at)], "parents", [])
        if not parents:
            return False
        at = bytes(parents[0])
    return at == old and seen


async def to_the_end(awaitable: Awaitable[T]) -> T:
    """``awaitable``'s result, awaited to its end even if the caller is cancelled meanwhile
    (a request whose client left): the cancellation then comes at the caller's next await.
    A commit cut off there would have moved the branch without being recorded, and been
    taken for someone else's move, and merged into the documents a second time."""
    task = asyncio.ensure_future(awaitable)
    cancelled = False
    try:
        while True:
            try:
                return await asyncio.shield(task)
            except asyncio.CancelledError:
                if task.cancelled():
                    raise
                cancelled = True
    finally:
        current = asyncio.current_task()
        if cancelled and current is not None and not task.cancelled():
            current.cancel()


def _done() -> asyncio.Future[None]:
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    done.set_result(None)
    return done


def _descends(repo: Repo, old: bytes, new: bytes) -> bool:
    """Whether commit ``new`` is ``old`` or descends from it."""
    return old == new or bool(can_fast_forward(repo, ObjectID(old), ObjectID(new)))


REWRITE_ATTEMPTS = 5


async def _rewrite_into(
    room: Room,
    change: FileChange,
    rescue: Rescue,
    mark: int,
    marked: bool,
    base_known: bool = True,
) -> asyncio.Future[None]:
    """Make ``room`` read ``change.new``: live edits made since ``change.old`` are merged
    onto it if they merge cleanly, else committed by ``rescue`` first (always, unless it
    reads so already, without ``base_known``). The edit carries ``mark``; with ``marked`` (a
    crash may have come during this rewrite), a document that holds it already had the
    rewrite, and is left as it is."""
    fence = rescue.sync.fence
    if marked and room.has_mark(mark):
        return _done()
    base = (change.old or b"").decode("utf-8")
    theirs = (change.new or b"").decode("utf-8")
    for _attempt in range(REWRITE_ATTEMPTS):
        live = str(room.text)
        if live == theirs and not base_known:
            return _done()
        if live == base and base_known:
            return replace_text(room, theirs, origin=Origin.GIT, mark=mark, fence=fence)
        merged, conflicted = (
            merge_text(base, live, theirs, characters=True) if base_known else (live, True)
        )
        if not conflicted:
            return replace_text(room, merged, origin=Origin.GIT, mark=mark, fence=fence)
        await rescue.keep(change.path, live)
        if str(room.text) == live:  # (nothing typed while it was committed)
            return replace_text(room, theirs, origin=Origin.GIT, mark=mark, fence=fence)
    live = str(room.text)
    await rescue.keep(change.path, live)
    if str(room.text) != live:
        log.warning("%s: edited while its live text was being kept; replaced", room.key)
    return replace_text(room, theirs, origin=Origin.GIT, mark=mark, fence=fence)


async def _keep_live(room: Room, base: str, rescue: Rescue) -> str | None:
    """Commit ``room``'s live text by ``rescue`` if it is not ``base`` (the text its branch
    last took), again while it is edited meanwhile; the rescue branch, if it was needed."""
    kept = base
    for _attempt in range(REWRITE_ATTEMPTS):
        live = str(room.text)
        if live == kept:
            break
        await rescue.keep(room.doc_id.path, live, no_text=True)
        kept = live
    else:
        if str(room.text) != kept:
            log.warning("%s: edited while its live text was being kept; closed", room.key)
    return None if kept == base else rescue.name


class Rescue:
    """Live text that a move of its branch would drop (a rewrite it does not merge onto, a
    file made no text file), committed on a branch made for it from the commit the live
    documents matched (the first :meth:`keep` makes it, with its commit: never a branch
    without the text). Each text goes where ``rescue_paths`` says. With ``base_gone``, the
    repository does not hold that commit (it was replaced): the branch is made from
    ``base``, the head the documents are made to read as instead."""

    def __init__(self, sync: BranchSync, base: bytes, *, base_gone: bool = False) -> None:
        self.sync = sync
        self.base = base
        self.base_gone = base_gone
        self.name: str | None = None
        self.head: bytes | None = None
        self.kept: dict[str, str] = {}  # path -> the path its text is committed as

    async def keep(self, path: str, text: str, *, no_text: bool = False) -> None:
        """Commit ``text`` as ``path`` on the rescue branch. ``no_text``: the move made
        ``path`` no text file (else: a rewrite the text does not merge onto). The commit
        names who typed the text (``BranchSync.rescuers``)."""
        sync = self.sync
        owner = sync.owner
        users, stored = await sync.rescuers(path)
        lines = [author_line(user) for user in users] or [ENGINE_AUTHOR]
        data = text.encode("utf-8")
        message = f"Keep the live edits of {path}\n\n" + (
            f"{sync.branch} moved while they were not committed, to a commit where "
            f"{path} is no text file (a binary file, a directory, a symbolic link...).\n"
            if no_text
            else f"The repository of {sync.branch} does not hold the commit they were made "
            "from (was it replaced?); they could not be merged onto its head.\n"
            if self.base_gone
            else f"{sync.branch} was rewritten while they were not committed; they did "
            "not merge cleanly onto its new head.\n"
        )
        message += "".join(f"\nCo-authored-by: {line}" for line in lines[1:])

        def write(repo: Repo) -> tuple[str | None, bytes | None, str]:
            name, head = self.name, self.head
            kept_as = self.kept.get(path)
            if kept_as is None:
                kept_as = rescue_paths(repo, head or self.base, {path: data})[path]
            commit = functools.partial(
                commit_changes,
                repo,
                changes={kept_as: data},
                message=message,
                author=lines[0],
                committer=ENGINE_AUTHOR,
                text_only=True,
            )
            try:
                if name is not None:
                    return name, commit(name, expected=head), kept_as
                for _attempt in range(REWRITE_ATTEMPTS):
                    name = free_branch(repo, rescue_branch(sync.branch, self.base))
                    with contextlib.suppress(BranchExists):  # made meanwhile: the next name
                        return name, commit(name, expected=self.base, new_branch=True), kept_as
                raise RuntimeError(f"no free name for the rescue branch of {sync.branch}")
            except NothingToCommit:  # its branch holds the text there already
                return self.name, self.head, kept_as

        name, head, kept_as = await in_repo(owner.repos, sync.repo, write)
        await sync.rescue_landed(stored, path)
        if name is None or head is None or (name, head) == (self.name, self.head):
            return
        self.name, self.head = name, head
        self.kept[path] = kept_as
        problem = file_problem(path, data)
        log.warning(
            "%s%s: live edits %s were committed on %s%s",
            sync.prefix,
            path,
            "of a file the branch made no text file"
            if no_text
            else "made from a commit the repository does not hold"
            if self.base_gone
            else "that do not merge onto the rewritten branch",
            self.name,
            ""
            if kept_as == path
            else f" as {kept_as} (git's fsck refuses them as {path}: {problem.msg_id})"
            if problem is not None
            else f" as {kept_as} (the branch has no place for a file at {path})",
        )
        owner.events.publish(
            sync.repo,
            {
                "kind": "rescued",
                "branch": sync.branch,
                "path": path,
                "as": kept_as,
                "into": self.name,
                "commit": hexsha(self.head),
            },
        )


class GitSync:
    """Every branch's :class:`BranchSync`, wired into the rooms; a ``Service``."""

    def __init__(
        self,
        repos: Repositories,
        rooms: Rooms,
        store: Store,
        events: EventHub,
        *,
        idle: float = 1.0,
        max_lag: float = 10.0,
        poll: float = 1.0,
        state_dir: Path | None = None,
        owns_repos: bool = False,
        leases: Leases | None = None,
        lease_retry: float = 0.5,
    ) -> None:
        self.repos = repos
        self.leases = leases
        """In a cluster: each branch's commits are made under its lease (see ``flush``)."""
        self.lease_retry = lease_retry
        self.open_elsewhere: Callable[[str, str], Awaitable[list[str]]] | None = None
        """In a cluster: the other nodes that have documents of a branch open."""
        self.owns_repos = owns_repos
        """No other process writes the repositories (the server holds their lock): every
        lock file found at start was left by a dead writer, whatever its age."""
        self.rooms = rooms
        self.store = store
        self.clean_marker = None if state_dir is None else state_dir / CLEAN_SHUTDOWN
        self.events = events
        self.idle = idle
        self.max_lag = max_lag
        self.poll = poll
        self.stopped = False
        self.clean_start = False  # the last shutdown left the clean-shutdown marker
        self.incomplete = False
        """Something this run could not commit is left in the store (a failed room, a branch
        missing at recovery): the next start must look for it, so no clean-shutdown marker."""
        self.branches: dict[tuple[str, str], BranchSync] = {}
        self.observe_commit: Callable[[float], None] | None = None
        """Called with the seconds each continuous commit took to write (git thread included)."""
        self._creating: dict[tuple[str, str], asyncio.Task[BranchSync]] = {}
        self.forming: dict[tuple[str, str], asyncio.Event] = {}
        """Branches being forked: their documents load once the event is set."""
        self._checks: set[asyncio.Task[None]] = set()  # loaded documents compared with git
        self.on_deleted: list[Callable[[str, str], None]] = []
        """Called with (repository, branch) as the engine forgets a deleted branch (see
        :meth:`forget_deleted`), whoever deleted it."""
        self._watcher: asyncio.Task[None] | None = None
        self.unrecorded = Unrecorded(repos, store)
        """Each repository's branches whose stored documents it has no record of."""
        rooms.before_load.append(self._before_load)
        rooms.committed_state = self._committed_state
        rooms.on_room.append(self._on_room)
        rooms.before_unload.append(self._before_unload)
        rooms.on_unloaded.append(self._on_unloaded)

    # -- service -----------------------------------------------------------------------------

    async def start(self) -> None:
        await in_git_thread(self.repos, self._recover_locks)
        self.clean_start = await in_git_thread(self.repos, self._take_clean_marker)
        if self.clean_start:
            log.info("last shutdown committed everything: no documents to recover")
        else:
            await self._recover_uncommitted()
        self._watcher = asyncio.create_task(self._watch(), name="ref watcher")

    async def stop(self) -> None:
        """Commit everything still pending (graceful shutdown); if all of it was committed,
        leave the clean-shutdown marker so that the next start need not look for it."""
        self.stopped = True
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        clean = True
        for sync in list(self.branches.values()):
            try:
                await sync.flush_patiently()
            except Exception:
                clean = False
                log.exception("%s: final commit failed", sync.name)
            if sync.dirty or sync.held:  # (held: the next start's scan reports it again)
                clean = False
        if clean and not self.incomplete and self.clean_marker is not None:
            await in_git_thread(self.repos, _write_durably, self.clean_marker)

    def _take_clean_marker(self) -> bool:
        """Whether the last shutdown left the marker; it is removed (durably) before anything
        can change, so that a crash from now on makes the next start recover."""
        marker = self.clean_marker
        if marker is None or not marker.exists():
            return False
        marker.unlink()
        fsync_directory(str(marker.parent))
        return True

    def _recover_locks(self) -> None:
        older_than = -math.inf if self.owns_repos else STALE_AFTER
        for name in self.repos.names():
            removed = recover_stale_locks(self.repos.open(name), older_than)
            for path in removed:
                log.warning("%s: removed a stale lock %s left by a crash", name, path)

    async def _recover_uncommitted(self) -> None:
        """Commit live state a crash left uncommitted: documents in the store whose text
        differs from their branch head. Every stored document is loaded, so this runs only
        when the last shutdown did not leave the clean-shutdown marker."""
        by_branch: dict[tuple[str, str], list[DocId]] = {}
        try:
            keys = await self.store.keys()
        except Exception as exc:  # a damaged store file: serve what can be read
            log.error(
                "the store cannot list its documents (%s): nothing recovered at start; "
                "run `collab store check` with the server stopped",
                exc,
            )
            self.incomplete = True
            return
        for key in keys:
            try:
                doc_id = DocId.parse(key)
            except Exception:
                continue
            by_branch.setdefault((doc_id.repo, doc_id.branch), []).append(doc_id)
        for (repo, branch), doc_ids in by_branch.items():
            try:
                await self._recover_branch(repo, branch, doc_ids)
            except Exception:  # one repository's damage must not keep the others unserved
                log.exception("%s/%s: recovery at start failed; served as it is", repo, branch)
                self.incomplete = True

    async def _recover_branch(self, repo: str, branch: str, doc_ids: list[DocId]) -> None:
        try:
            sync = await self.branch(repo, branch)
        except BranchNotFound:
            synced = None
            if self.leases is None:
                synced = await in_repo(self.repos, repo, read_synced, branch)
            if synced is not None:
                # deleted by another tool (its records are the engine's own): what its
                # stored documents hold beyond its last commit goes on a branch of its own
                log.warning("%s/%s: deleted outside the engine; forgetting it", repo, branch)
                await self.forget_deleted(repo, branch)
                return
            self.incomplete = True  # looked for again at the next start
            return
        except RepoNotFound:
            log.warning(
                "%s/%s: the repository is missing; %d stored document%s kept, not recovered, "
                "and looked for again at every start (a full recovery scan) until the "
                "repository is back under --repos",
                repo,
                branch,
                len(doc_ids),
                "" if len(doc_ids) == 1 else "s",
            )
            self.incomplete = True
            return
        except BranchDamaged as exc:  # listed in /healthz; its documents are refused
            self.rooms.branch_damaged(repo, branch, f"{exc}; not recovered")
            self.incomplete = True
            return
        writers = await self._recall_writers(sync) if self.leases is None else {}
        refused = await self._load_recovered(sync, doc_ids)
        await sync.flush()
        if refused:
            # refused as they lie below (or above) another document loaded before them, a
            # file not committed yet: now that it is, they load (no file is in their way),
            # or their text is kept on a branch of its own (one is); by their typists,
            # though the commit just made settled the store's record of them
            for user, identity in writers.items():
                sync.authors.setdefault(user, identity)
            await self._load_recovered(sync, refused, last=True)
            await sync.flush()

    async def _load_recovered(
        self, sync: BranchSync, doc_ids: list[DocId], *, last: bool = False
    ) -> list[DocId]:
        """Load the documents ``doc_ids`` of ``sync``'s branch, marked changed (a recovery
        at start commits them); returns those refused as no text file (``NOT_TEXT``: below
        a document loaded before them, not committed yet, say), to be tried again once the
        others are committed, unless this is the ``last`` try."""
        refused: list[DocId] = []
        for doc_id in doc_ids:
            try:
                async with self.rooms.borrow(doc_id) as room:
                    sync.dirty[doc_id.path] = room
            except ProtocolError as exc:  # damaged (quarantined), or no longer text
                if str(doc_id) not in await self.store.keys(str(doc_id)):
                    # a move of the branch while the server was down closed it as a load
                    # merged the move, its live edits kept (BranchSync.retire said so):
                    # nothing of it is left to recover
                    log.debug("%s: closed by the move of its branch: %s", doc_id, exc.message)
                    continue
                if exc.code == ErrorCode.NOT_TEXT and not last:
                    refused.append(doc_id)
                    continue
                log.error("%s: not recovered: %s", doc_id, exc.message)
                self.incomplete = True
        return refused

    async def _recall_writers(self, sync: BranchSync) -> dict[str, Identity]:
        """Before a recovery at start (on one node): the people the store kept as writers
        of ``sync``'s branch since its last commit become those the process knows to have
        written (``BranchSync.authors``), as a process that had not crashed would know them.
        The recovery's commit and its rescues name them all, whichever of them settles the
        store's record first (which it keeps of the branch as a whole). Returns them."""
        try:
            users = await self.store.take_authors(f"{sync.repo}/{sync.branch}")
        except Exception as exc:
            log.warning("%s: the store could not say who wrote (%s)", sync.name, exc)
            return {}
        writers = {user: Identity(user, Role.WRITE, sync.repo) for user in users}
        for user, identity in writers.items():
            sync.authors.setdefault(user, identity)
        return writers

    def held_files(self) -> dict[str, dict[str, int]]:
        """Documents whose commits are held (see ``BranchSync._hold_shrinking``)."""
        return {
            f"{sync.prefix}{path}": {"size": size, "head_size": head_size}
            for sync in self.branches.values()
            for path, (size, head_size) in sync.held.items()
        }

    # -- branches ----------------------------------------------------------------------------

    def head(self, repo: str, branch: str) -> bytes | None:
        """The branch's head (``None``: it does not exist); ``BranchDamaged`` if its ref
        holds no stored object's id."""
        try:
            return self.repos.branch_head(repo, branch)
        except BranchNotFound:
            return None

    async def branch(self, repo: str, branch: str) -> BranchSync:
        """The branch's sync state, created (and caught up with its ref) on first use.
        Raises ``RepoNotFound``/``BranchNotFound``."""
        key = (repo, branch)
        sync = self.branches.get(key)
        if sync is not None:
            return sync
        task = self._creating.get(key)
        if task is None:
            task = asyncio.create_task(self._create(repo, branch))
            self._creating[key] = task
            task.add_done_callback(lambda _t: self._creating.pop(key, None))
        return await asyncio.shield(task)

    async def forget_deleted(
        self, repo: str, branch: str, *, how: str = "outside the engine"
    ) -> None:
        """Drop what the engine kept of the deleted branch ``branch``: its rooms still loaded
        (in their grace period; or open, where another tool deleted it) are unloaded without
        the snapshot an unload stores, which would bring their text back to a branch made
        again under the name; their stored histories are deleted, who wrote to them, and
        the branch's private records. Stored text its last commit lacks is committed on a
        branch of its own first (see :meth:`_rescue_stored`), which says how the branch
        was deleted (``how``: ``by ann (branch.delete)``...)."""
        prefix = f"{repo}/{branch}:"
        sync = self.branches.get((repo, branch))
        if sync is not None:  # no commit of it restores the branch meanwhile
            sync.deleting = True
        self.forget(repo, branch)
        for hook in list(self.on_deleted):
            hook(repo, branch)
        for room in self.rooms.loaded(prefix):  # first: nothing more is typed into them
            await self.rooms.retire(
                room.key,
                ErrorCode.NOT_FOUND,
                f"branch {branch!r} deleted",
                level=logging.INFO,
                keep_store=True,  # (until what it holds is rescued)
            )
        await self._rescue_stored(repo, branch, how)
        authors = await self.store.take_authors(f"{repo}/{branch}")
        await self.store.settle_authors(f"{repo}/{branch}", authors)
        for key in await self.store.keys(prefix):
            await self.store.delete(key)
        self.unrecorded.clear(repo, branch)

        def forget(git: Repo) -> None:
            forget_records(git, branch)
            forget_synced_state(git, branch)

        await in_repo(self.repos, repo, forget)

    async def _rescue_stored(self, repo: str, branch: str, how: str) -> None:
        """Commit the stored text of the deleted ``branch``'s documents that the commit they
        last matched lacks (edits not committed yet when another tool deleted the branch, and
        the name cannot be restored) on a branch made for it from that commit, named
        ``<branch>-rescued-<commit>`` with its slashes made dashes (a name below the deleted
        one may be taken by then), each text where ``rescue_paths`` puts it. The branch is
        made with its commit or not at all: a failure leaves nothing behind but what it
        was to keep (the stored documents, the records), for :meth:`forget_clashing` to try
        again before a branch is made under the name."""
        prefix = f"{repo}/{branch}:"

        def last_synced(git: Repo) -> bytes | None:
            synced = read_synced(git, branch)
            return synced if synced is not None and is_stored(git, synced) else None

        synced = await in_repo(self.repos, repo, last_synced)  # (None: its commit is gone)
        texts: dict[str, bytes] = {}
        for key in await self.store.keys(prefix):
            stored = await self.stored_text(key)
            if stored is None:
                continue
            text = stored.encode("utf-8")
            path = key[len(prefix) :]
            blob = None
            if synced is not None:
                blob = await in_repo(self.repos, repo, read_blob, synced, path)
            if (blob or b"") != text:
                texts[path] = text
        if not texts:
            return
        lines = [author_line(user) for user in await self.store.take_authors(f"{repo}/{branch}")]
        lines = lines or [ENGINE_AUTHOR]
        message = (
            f"Keep the live edits of {branch}\n\n{branch} was deleted {how} "
            "while they were not committed.\n"
        )
        message += "".join(f"\nCo-authored-by: {line}" for line in lines[1:])
        kept: dict[str, str] = {}  # path -> the path its text is committed as

        def write(git: Repo) -> tuple[str, bytes]:
            # from the commit the documents last matched; with none (it is gone), a branch
            # of their text alone; made with its commit, or not at all
            kept.update(rescue_paths(git, synced, texts))
            name = rescue_branch(branch.replace("/", "-"), synced)
            for _attempt in range(REWRITE_ATTEMPTS):
                free = free_branch(git, name)
                with contextlib.suppress(BranchExists):  # made meanwhile: the next name
                    head = commit_changes(
                        git,
                        free,
                        {kept[path]: text for path, text in texts.items()},
                        message=message,
                        author=lines[0],
                        committer=ENGINE_AUTHOR,
                        expected=synced,
                        text_only=True,
                        new_branch=True,
                    )
                    return free, head
            raise RuntimeError(f"no free name for the rescue branch of {branch}")

        name, head = await in_repo(self.repos, repo, write)
        log.warning(
            "%s/%s: deleted %s with edits not committed (%s); they were committed on %s",
            repo,
            branch,
            how,
            ", ".join(sorted(kept)),
            name,
        )
        for path, kept_as in sorted(kept.items()):
            self.events.publish(
                repo,
                {
                    "kind": "rescued",
                    "branch": branch,
                    "path": path,
                    "as": kept_as,
                    "into": name,
                    "commit": hexsha(head),
                },
            )

    async def stored_text(self, key: str) -> str | None:
        """The text of the document ``key`` as the store holds it; None if it holds none
        (or a damaged history, which is not taken for its text)."""
        stored = await self.store.load(key)
        if stored is None or stored.empty or stored.corrupt is not None:
            return None
        doc: Doc[Any] = Doc()
        stored.apply_to(doc)
        return str(doc.get(TEXT_NAME, type=Text))

    async def forget_clashing(self, repo: str, branch: str, *, namesake: bool = False) -> None:
        """Forget the branches deleted by another tool whose records would keep
        ``branch``'s from being written (see ``stale_records``): before it is made, or
        first used. With ``namesake`` (it is being made), also a branch of its very name
        deleted so: its records and stored documents would be taken for the new branch's
        (their text committed over the new branch's start); and a branch of its name that
        the repository has neither made nor any record of, whose documents the store holds
        (of another history: see :meth:`_of_another_history`)."""

        def read(git: Repo) -> tuple[list[str], RepoIdentity | None]:
            names = stale_records(git, branch, namesake=namesake)
            if not namesake or branch in names or read_ref(git, branch_ref(branch)) is not None:
                return names, None
            return names, self.repos.identity(repo)

        names, lacking = await in_repo(self.repos, repo, read)
        if lacking is not None and await self._of_another_history(repo, branch, lacking):
            log.error(
                "%s/%s: the store holds documents of it, but the repository has neither the "
                "branch nor any record of it (was it replaced?); their text is kept on a "
                "branch of its own before the name is made again",
                repo,
                branch,
            )
            names.append(branch)
        for stale in names:
            if self.open_elsewhere is not None and (
                nodes := await self.open_elsewhere(repo, stale)
            ):
                # its rooms there take edits the rescue here would miss: they restore it
                raise ProtocolError(
                    ErrorCode.CONFLICT,
                    f"{stale!r}, deleted outside the engine, is open on node "
                    f"{', '.join(nodes)}, where it is restored from its documents: "
                    + (
                        "it cannot be made again yet"
                        if stale == branch
                        else f"{branch!r} cannot be made beside it"
                    ),
                )
            log.info("%s: forgetting the deleted branch %s, whose name clashes", repo, stale)
            await self.forget_deleted(repo, stale)

    async def _of_another_history(self, repo: str, branch: str, identity: RepoIdentity) -> bool:
        """Whether the store holds documents of ``branch``, of which ``repo`` (the directory
        ``identity``) holds no record it can resolve: of another history (the repository was
        replaced), never to be taken for the branch's. Asks the store only about a suspect of
        the repository's one listing (see ``unrecorded``): a branch used or made for the
        first time costs no look-up."""
        scan = await self.unrecorded.scan(repo, identity)
        return branch in scan.suspects and await self.unrecorded.confirm(repo, branch)

    async def _create(self, repo: str, branch: str) -> BranchSync:
        """The branch's sync state, from its records in the repository.

        Where the repository holds no record of the commit the live documents match (none
        at all, or one of a commit it does not hold), they start at the branch's head if
        the store holds none of them (a branch used for the first time). If it holds some,
        they were made from another history than the branch's (the repository was replaced,
        or cloned without ``refs/collab/*``; another ``--repos`` over the same store): the
        sync starts at that unknown commit, which its first :meth:`BranchSync.catch_up`
        finds gone (the first load of a document of the branch, or the recovery at start,
        makes one before anything is committed), so the documents come to read as the
        branch's head, and their text that differs from it is kept on a branch of its own,
        never committed over a head it was not made from. Whether the store holds some is
        asked of the repository's suspects (``unrecorded``), and of the store only for a
        suspect: a new branch's first use makes no look-up in the store."""
        await self.forget_clashing(repo, branch)
        scan = await self.unrecorded.scan(repo)
        stored: bool | None = None  # whether the store holds documents of it (if a suspect)
        for _attempt in range(REWRITE_ATTEMPTS):
            suspect = branch in scan.suspects
            found = await in_git_thread(
                self.repos, self._start, repo, branch, scan.identity, suspect, stored
            )
            if isinstance(found, _Unsettled):
                if found.identity is not None:  # replaced since its listing: listed again
                    scan = await self.unrecorded.scan(repo, found.identity)
                    stored = None
                else:
                    stored = await self.unrecorded.confirm(repo, branch)
                continue
            synced, states = found
            sync = BranchSync(self, repo, branch, synced)
            sync.committed_states = states
            self.branches[(repo, branch)] = sync
            return sync
        raise RuntimeError(f"{repo}/{branch}: the repository was replaced again and again")

    def _start(
        self,
        repo: str,
        branch: str,
        listed_in: RepoIdentity | None,
        suspect: bool,
        stored: bool | None,
    ) -> tuple[bytes, dict[str, bytes]] | _Unsettled:
        """(In a git thread.) The commit ``branch``'s live documents match, with the states
        its commits took them in (see :meth:`_create`); ``_Unsettled`` where the scan of the
        repository (made in the directory ``listed_in``, where the branch is a ``suspect``
        or not) cannot say yet, or the store (``stored``: whether it holds documents of
        the branch, once asked) must be asked first."""
        git = self.repos.open(repo)
        head = self.repos.branch_head(repo, branch)  # BranchNotFound, BranchDamaged
        synced = read_synced(git, branch)
        states = read_synced_state(git, branch)
        if synced is None or not is_stored(git, synced):
            identity = self.repos.identity(repo)
            if listed_in is not None and identity != listed_in:
                return _Unsettled(identity)
            if suspect and stored is None:
                return _Unsettled(None)
            if suspect and stored:  # of another history: no record the repository holds
                return synced or UNKNOWN_COMMIT, {}  # is theirs
            set_synced(git, branch, head)  # no live documents yet: they start at head
            synced = head
        if self.leases is not None:  # another node may be committing: left to the
            return synced, states  # lease holder's reconcile (after its claim)
        return _finish_commit(git, branch, head, synced), states

    async def _committed_state(self, doc_id: DocId) -> bytes | None:
        """The state vector ``doc_id``'s history had when its branch last took its text
        (``Rooms.committed_state``): a stored history that does not cover it lost edits."""
        sync = self.branches.get((doc_id.repo, doc_id.branch))
        if sync is not None:
            return sync.committed_states.get(doc_id.path)
        states = await in_repo(self.repos, doc_id.repo, read_synced_state, doc_id.branch)
        return states.get(doc_id.path)

    def forget(self, repo: str, branch: str) -> None:
        sync = self.branches.pop((repo, branch), None)
        if sync is not None:
            sync._cancel_timers()

    # -- room hooks --------------------------------------------------------------------------

    async def _before_load(self, doc_id: DocId) -> None:
        forming = self.forming.get((doc_id.repo, doc_id.branch))
        if forming is not None:  # a fork being made: its documents' history comes first
            await forming.wait()
        sync = await self.branch(doc_id.repo, doc_id.branch)
        if not sync.reconciling:
            await sync.catch_up()
            # last, with no await after it: a document loading from now on is seen here
            try:
                sync.check_clash(doc_id.path)
            except ProtocolError:
                synced = sync.synced
                if await in_repo(self.repos, doc_id.repo, blocked_at, synced, [doc_id.path]):
                    return  # below a file of the branch: its load says so (that one is open)
                raise

    def _on_room(self, room: Room) -> None:
        sync = self.branches.get((room.doc_id.repo, room.doc_id.branch))
        if sync is not None:
            room.listeners.append(sync.touch)
            if room.lacking is not None:
                # its commits are held, and reported as such, from the start: a commit is
                # tried (and held) whether or not anyone types
                sync.touch(room, Origin.BUS, None)
            elif self.leases is not None and room.loaded_seq > 0:
                # in a cluster, a node that died may have left edits uncommitted in the shared
                # store: whichever node loads the document next commits them
                task = asyncio.create_task(self._commit_if_behind(sync, room))
                self._checks.add(task)
                task.add_done_callback(self._checks.discard)

    async def _commit_if_behind(self, sync: BranchSync, room: Room) -> None:
        """Mark ``room`` changed if its loaded text is not what its branch last synced. (Not
        while the repository lacks that commit: the catch-up that finds it gone makes the
        documents read as the branch's head, see :meth:`_create`.)"""
        synced, path = sync.synced, room.doc_id.path

        def read(repo: Repo) -> tuple[bool, bytes | None]:
            if not is_stored(repo, synced):
                return False, None
            return True, read_blob(repo, synced, path)

        try:
            known, blob = await in_repo(self.repos, sync.repo, read)
        except Exception:
            log.exception("%s: reading %s at the synced commit failed", sync.name, path)
            return
        if known and (blob or b"") != str(room.text).encode("utf-8"):
            log.info(
                "%s%s: loaded with edits not yet committed; committing them", sync.prefix, path
            )
            sync.touch(room, Origin.BUS, None)

    async def _before_unload(self, room: Room) -> None:
        """Commit the room's edits before it unloads. In a cluster, while another node holds
        the branch's lease, the room stays loaded (and takes the other nodes' edits) until
        they are committed: committed later, an unloaded room's text would be stale."""
        sync = self.branches.get((room.doc_id.repo, room.doc_id.branch))
        path = room.doc_id.path
        if sync is None or path not in sync.dirty:
            return
        await sync.flush_patiently(lambda: path not in sync.dirty)
        if self.leases is not None and sync.dirty.get(path) is room and not self.stopped:
            raise KeepLoaded(
                f"another node holds {sync.name}'s lease; stays loaded until its edits are "
                "committed"
            )

    def _on_unloaded(self, room: Room) -> None:
        """Forget a branch's sync state once its last room is gone and nothing is pending
        (it is made again from the refs on next use)."""
        sync = self.branches.get((room.doc_id.repo, room.doc_id.branch))
        if sync is not None and sync.idle and not self.rooms.active(sync.prefix):
            self.forget(sync.repo, sync.branch)

    def _heads(self, syncs: list[BranchSync]) -> list[bytes | None]:
        heads: list[bytes | None] = []
        for sync in syncs:
            try:
                heads.append(self.head(sync.repo, sync.branch))
            except BranchDamaged:  # nothing to follow until it is repaired
                heads.append(None)
        return heads

    async def _watch(self) -> None:
        """Notice refs moved by other tools (a commit made with the git CLI, say)."""
        while True:
            await asyncio.sleep(self.poll)
            watched = [s for s in self.branches.values() if self.rooms.loaded(s.prefix)]
            if not watched:
                continue
            try:
                heads = await in_git_thread(self.repos, self._heads, watched)
            except Exception:
                log.exception("reading branch heads failed")
                continue
            for sync, head in zip(watched, heads, strict=True):
                if head is not None and head != sync.synced and not sync.lock.locked():
                    try:
                        await sync.catch_up()
                    except Exception:
                        log.exception("%s: merging an external move failed", sync.name)


@dataclass(frozen=True, slots=True)
class _Unsettled:
    """Where a branch's documents start cannot be said yet (``GitSync._start``): its
    repository is now the directory ``identity``, not the one its scan was made in (list
    the store again), or, with ``None``, the store must say whether it holds documents of
    the branch, a suspect."""

    identity: RepoIdentity | None


def _write_durably(path: Path) -> None:
    with path.open("wb") as f:
        f.flush()
        os.fsync(f.fileno())
    fsync_directory(str(path.parent))


def _finish_commit(repo: Repo, branch: str, head: bytes, synced: bytes) -> bytes:
    """The synced commit of ``branch``, once a commit of the live documents' text (or a
    merge already merged into them) that a crash interrupted is accounted for: if the
    branch was moved to it but it was not yet recorded as synced, it is recorded now. The
    documents hold it already: merged into them again as if someone had pushed it, every
    line of it would be there twice. (A commit the branch never moved to is forgotten: its
    text is still live.)"""
    committing = read_committing(repo, branch)
    if committing is None:
        return synced
    if (
        committing != synced
        and is_stored(repo, synced)
        and is_stored(repo, committing)
        and _descends(repo, synced, committing)
        and _descends(repo, committing, head)
    ):
        log.warning(
            "%s/%s: a commit of the live documents was interrupted after the branch moved to "
            "%s; recorded as synced",
            repo.path,
            branch,
            committing[:12].decode(),
        )
        set_synced(repo, branch, committing)
        synced = committing
    clear_committing(repo, branch, committing)
    return synced


def fence_for(
    repo: Repo, branch: str, grant: Grant | None
) -> contextlib.AbstractContextManager[None]:
    """The branch's fence for a write under ``grant`` (in a cluster, see
    ``gitsync.fence.fenced``); none outside one."""
    return fenced(repo, branch, grant.token) if grant is not None else contextlib.nullcontext()


def _set_synced(repo: Repo, branch: str, head: bytes, grant: Grant | None) -> None:
    """Record ``head`` as synced; in a cluster, only while ``grant`` is the newest lease."""
    with fence_for(repo, branch, grant):
        set_synced(repo, branch, head)
