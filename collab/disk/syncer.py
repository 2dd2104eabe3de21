"""``WorkingTree``: a branch checked out in a directory and kept in two-way sync with its live
documents, over the engine's ``/ws`` protocol, until stopped.

Every change, wherever it comes from, is handled the same way for the one file it touches:
read the disk, the live text and the last synced text (the base, recorded in the tree), and
let :func:`~collab.disk.reconcile.reconcile` say what each side becomes. A disk edit becomes
the smallest live edits, so concurrent typing survives; a live edit is written to the file
atomically; when both moved, they merge three-way. A file the syncer wrote itself comes back
from the watcher with the content of its base, so it is recognised by hash and not sent back.

Binary files, files over ``max_file`` and deletions have no live edits: they are committed on
the branch and pushed through the server's git bridge, and the pushes of others are fetched
from it. A base is recorded only once the server has durably taken the edits it stands for,
so a syncer killed at any point loses nothing: the next start merges what each side holds
against the bases, three-way, like any other change.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from pathlib import Path
from typing import Any

from gitsync.changes import is_text
from protocol.errors import ErrorCode

from ..client import Client, ClientError, Document
from ..lifecycle import Lifecycle
from ..live.text_edits import apply_edits, diff_edits
from ..store.data_lock import DataDirLock
from .checkout import Checkout, FileMoved, GitError, TreeEntry
from .documents import Documents
from .files import (
    TEMP_MARK,
    PathFilter,
    Raced,
    Stamp,
    read_bytes,
    remove_file,
    stamp_of,
    write_atomically,
)
from .head import HeadWatch, checked_out, shown
from .leases import allow_lease_checks
from .modes import EXECUTABLE, LINK, REGULAR, disk_mode, link_target, set_disk_mode, write_link
from .pushes import ANY, Pushes
from .reconcile import holds_change, reconcile, stale_base
from .replaced import ReplacedFiles
from .report import Counters, Reporter
from .state import LOCK_FILE, STATE_FILE, SyncState, digest
from .watcher import changed_on_disk, watch
from .writers import read_when_written, writers_done

__all__ = ["WorkingTree"]

log = logging.getLogger("collab.disk")

_NOT_LIVE = {ErrorCode.NOT_TEXT, ErrorCode.TOO_LARGE}
_REFUSED = {ErrorCode.BAD_NAME}
_TRIES = 10  # rounds of one file's sync when saves keep racing the writes
STALE_WINDOW = 1.0
"""Seconds after the syncer writes a file during which a save that lacks the write may be
taken as made from the content the write replaced (see
:func:`~collab.disk.reconcile.stale_base`)."""
_STALE_VERSIONS = 16  # at most this many of a file's replaced contents are kept
WRITING_LIMIT = 10.0  # seconds a file held open for writing is waited for before it is synced


FOLLOW_LATEST = 1.0
"""Seconds at most between a new head of the branch and the checkout's branch and index
following it, however busy the tree is (see ``WorkingTree._update_idle``)."""

MAX_FILE = 4 * 1024 * 1024
"""The largest file synced as a live document by default, as the server's own default
``--max-file``: a larger one is synced through git (as is one the server will not open
live: it refuses with 4009)."""


class _Paused(Exception):
    """The tree has another branch (or a commit) checked out: the sync waits for the branch."""


class WorkingTree(Lifecycle):
    """``async with WorkingTree(dir, url, repo) as tree:`` syncs until the block ends.

    ``branch`` defaults to the user's own (``branch.join``). ``debounce`` is how long live
    edits gather before they are written to a file; ``settle`` how long an emptied or
    vanished file is given to come back (an editor's truncate-and-write, delete-and-create)
    before it counts as emptied or deleted. It is generous: a file taken for emptied while
    an editor was still writing it would have the live text written over it (renamed into
    place), and the editor's write would go to the file it replaced, unseen. A file a write
    replaced is watched for a save that goes on writing into it, for as long as a program
    holds it open for writing (where that can be told) and as long again after its last
    change: once no program writes it, what was written is put back and merged."""

    def __init__(
        self,
        root: Path,
        url: str,
        repo: str,
        branch: str | None = None,
        *,
        user: str | None = None,
        token: str | None = None,
        debounce: float = 0.02,
        settle: float = 0.5,
        watch_step: int = 5,
        max_file: int = MAX_FILE,
        open_limit: int = 200,
        report: Reporter | None = None,
    ) -> None:
        self.root = root.resolve()  # as the watcher's paths are (a symlinked root)
        self.url = url
        self.repo = repo
        self.branch = branch or ""
        self.user = user
        self.token = token
        self.debounce = debounce
        self.settle = settle
        self.watch_step = watch_step
        self.max_file = max_file
        self.open_limit = open_limit
        self.counters = Counters()
        self._report = report
        self.client: Client | None = None
        self._docs: Documents | None = None
        self._checkout: Checkout | None = None
        self._state: SyncState | None = None
        self._lock = DataDirLock(
            self.root / ".git",
            LOCK_FILE,
            "stop it first (it keeps the directory in sync already), or sync another directory",
            subject=self.root,
        )
        self._filter: PathFilter | None = None
        self._tree: dict[str, TreeEntry] = {}  # the branch head last fetched
        self._head = ""
        self._git_paths: set[str] = set()  # files that go through git, not live documents
        self._gone: set[str] = set()  # deleted at the server since the last fetch
        self._remote: set[str] = set()  # paths whose live side may have moved
        self._bases: dict[str, bytes | None] = {}  # bases waiting for the server's ack
        self._base_digests: dict[str, str | None] = {}  # ... and their hashes
        self._bases_due = asyncio.Event()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._limit = asyncio.Semaphore(32)
        self._locks: set[str] = set()
        self._moving: dict[str, asyncio.Event] = {}  # files a rename on disk is committing
        self._refused: set[str] = set()  # names the server refuses (4006): not synced
        self._overwritten: dict[str, list[tuple[bytes, float]]] = {}  # replaced, when; oldest first
        self._replaced = ReplacedFiles(self._put_back, hold=settle)
        self._putting_back: set[asyncio.Task[None]] = set()  # late saves waiting for a writer
        self._written: dict[str, str] = {}  # path -> hash of what the syncer last wrote there
        self._head_watch: HeadWatch | None = None  # whether the tree has the branch checked out
        self._paused: str | None = None  # what the tree has checked out instead, if not it
        self._held: set[str] = set()  # paths whose syncs wait for the branch to be checked out
        self._looking: asyncio.Task[None] | None = None  # a look at HEAD, which moved
        self._pushes: Pushes | None = None
        self._catching_up: asyncio.Task[None] | None = None
        self._following: asyncio.Task[None] | None = None  # the checkout's branch, moving
        self._follow_timer: asyncio.TimerHandle | None = None  # see _update_idle
        self._followed = ""  # the head the checkout's branch and index were last moved to
        self._catch_up_again = False
        self._services: list[asyncio.Task[None]] = []
        self._watcher: asyncio.Task[None] | None = None  # ends by itself once stopping
        self._stop = asyncio.Event()
        self.idle = asyncio.Event()

    # -- start and stop ----------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, check the branch out (or adopt the checkout), merge what changed on
        either side since the last run, and start watching both.

        One syncer at a time keeps a directory in sync (two would make every edit twice):
        another one's raises :class:`~collab.store.data_lock.DataDirBusy` naming its pid."""
        allow_lease_checks()  # to wait for saves under way (SIGIO ignored: see .leases)
        self._hold_tree()
        self.client = Client(self.url, token=self.token, user=self.user)
        try:
            await self.client.connect()
            await self._start(self.client)
        except BaseException:
            await self.stop()
            raise

    def _synced_branch(self) -> str | None:
        """The branch this tree was synced with last; ``None`` if it never was (a state
        recorded before the branch was recorded in it is taken for this branch's)."""
        path = self.root / ".git" / STATE_FILE
        if not path.is_file():
            return None
        state = SyncState(path)
        try:
            return state.get("branch") or self.branch
        finally:
            state.close()

    def _hold_tree(self) -> None:
        """Lock the directory for this syncer's life, once it is a checkout (the lock lives
        in its ``.git``; one being cloned has none yet)."""
        if (self.root / ".git").is_dir():
            self._lock.acquire()

    async def _start(self, client: Client) -> None:
        if not self.branch:
            self.branch = await client.join(self.repo)
        self._checkout = Checkout(
            self.root, self.url, self.repo, self.branch, user=client.user, token=self.token
        )
        await client.commit(self.repo, self.branch)  # live edits not committed yet reach git
        synced = self._synced_branch()
        first = synced != self.branch  # never synced here before (or another branch was)
        cloned = await self._checkout.ensure(first=first)
        self._hold_tree()
        self._head_watch = HeadWatch(self.root, self.branch)
        self._pushes = Pushes(self._checkout, self.root.name, self._pushed)
        self._state = SyncState(self.root / ".git" / STATE_FILE)
        if synced is not None and first:
            self._state.reset()  # the bases of another branch: its files are not this one's
        self._state.put("branch", self.branch)
        self._filter = PathFilter(self.root)
        self._docs = Documents(client, self.repo, self.branch, self._live_changed)
        self._docs.limit = self.open_limit
        self._docs.busy = lambda path: (
            path in self._locks or path in self._tasks or path in self._timers
        )
        await client.subscribe("events.subscribe", repo=self.repo)
        self._services.append(asyncio.create_task(self._events(client)))
        client.on_reconnect.append(lambda: self._reconnected(client))
        head = await self._checkout.fetch()
        suspects = await self._adopt(self._state, self._checkout, self._filter, head, cloned)
        await self._clear_left_writes(self._checkout)
        state = self._state
        watching = watch(
            self.root,
            self._filter,
            state.paths,
            self.schedule,
            step=self.watch_step,
            stop=self._stop,
            head_moved=self._head_moved,
        )
        self._watcher = asyncio.create_task(watching)
        self._services.append(asyncio.create_task(self._record_bases(client, self._state)))
        for path in suspects:
            self.schedule(path, remote=True)
        await self._open_busy_documents(client)
        self._update_idle()
        await self.wait_idle(timeout=None)  # the tree is merged with the branch
        self.counters.synced = len(self._state.paths())
        self._emit(
            event="ready",
            dir=str(self.root),
            repo=self.repo,
            branch=self.branch,
            files=self.counters.synced,
            cloned=cloned,
        )
        self._update_idle()

    async def _adopt(
        self, state: SyncState, checkout: Checkout, paths: PathFilter, head: str, cloned: bool
    ) -> set[str]:
        """Bring the bases up to the checkout (first run) and return the paths that may
        differ between disk, live and base: edited on disk, or changed on the branch. A
        checkout not ``cloned`` by the syncer may hold files git converted."""
        self._set_tree(await checkout.tree(head))  # (its files are synced, ignored or not)
        last = state.get("head")
        unborn = False  # a checkout with nothing committed (``git init``): none of its files
        # came from the branch, and none of the branch's is missing from it
        if last is None and await checkout.head() is None:
            unborn = True
            await checkout.take_branch(head)
            state.set_bases({})
            state.set_head(head, [path for path in await checkout.tree(head) if paths.wanted(path)])
            last = head
        if last is None:  # first run here: the files on disk came from the checked-out commit
            last = await checkout.head() or head
            entries = await checkout.tree(last)
            blobs = await checkout.blobs(entry.sha for entry in entries.values())
            bases = {
                path: blobs[entry.sha]
                for path, entry in entries.items()
                if entry.sha in blobs
                and entry.mode != "120000"
                and paths.wanted(path, tracked=True)
            }
            state.set_bases(bases)
            if not cloned:
                await self._undo_conversions(checkout, last, bases)
            state.put("head", last)
        checkout.keep_bytes()
        suspects = set(await checkout.changed(last, head)) if last != head else set()
        suspects |= state.due()  # changed by the head recorded last, not synced before a kill
        if unborn:
            suspects |= set(self._tree)  # every file of the branch comes to disk, merged
        self._gone |= {path for path in suspects if path not in self._tree}
        suspects |= await asyncio.to_thread(changed_on_disk, self.root, paths, state)
        self._head = head
        if suspects:
            await self._classify(checkout, suspects)
        due = {path for path in suspects if paths.wanted(path, tracked=path in self._gone)}
        state.set_head(head, due)  # what these paths hold at the head is merged from here on
        return due

    async def _clear_left_writes(self, checkout: Checkout) -> None:
        """Remove the files a syncer killed while writing left beside their paths
        (``.NAME.collab-tmp-PID``) that hold what the branch, the file or its recorded base
        holds, or the beginning of what the branch holds: a write of it (cut short), which
        this start makes again if it is still due, or the text a write replaced, which the
        sync has. Any other such file may hold a save a write had set aside: it is kept,
        and reported."""
        own = f"{TEMP_MARK}{os.getpid()}"
        for folder, dirs, files in os.walk(self.root):
            dirs[:] = [name for name in dirs if name != ".git"]
            for name in files:
                at = name.find(TEMP_MARK)
                if not name.startswith(".") or at < 0 or name.endswith(own):
                    continue
                left = Path(folder) / name
                target = left.with_name(name[1:at])
                rel = target.relative_to(self.root).as_posix()
                try:
                    data = left.read_bytes()
                    entry = self._tree.get(rel)
                    ours = (
                        (entry is not None and entry.sha == _blob_id(data))
                        or data == self._base(rel)
                        or (target.is_file() and target.read_bytes() == data)
                    )
                    if not ours and entry is not None:  # (a write killed half way)
                        held = (await checkout.blobs([entry.sha])).get(entry.sha)
                        ours = held is not None and held.startswith(data)
                    if ours:
                        left.unlink()
                        continue
                except OSError:
                    continue
                log.warning("%s: left by a write cut short; it may hold a save: kept", left)
                self._emit(event="error", path=rel, message=f"{name} kept: it may hold a save")

    async def _undo_conversions(
        self, checkout: Checkout, commit: str, bases: dict[str, bytes]
    ) -> None:
        """Write back as the branch holds them the files of a checkout whose line endings git
        converted (``core.autocrlf``, ``eol`` in a ``.gitattributes``): git counts them
        unchanged, but the sync would send every converted line to the branch."""
        changed = await checkout.modified(commit)
        checkout.keep_bytes()  # from here on, git counts them changed until they are undone
        converted = {path: data for path, data in bases.items() if path not in changed}
        await asyncio.to_thread(_write_back, self.root, converted)

    async def _open_busy_documents(self, client: Client) -> None:
        """Open the documents someone is editing now, so that their typing reaches disk."""
        status = await client.call("server.status", repo=self.repo)
        prefix = f"{self.repo}/{self.branch}:"
        for room in status.get("rooms", []):
            key = str(room.get("doc", ""))
            others = set(room.get("users", [])) - {client.user}
            if key.startswith(prefix) and others:
                self.schedule(key[len(prefix) :], remote=True)

    async def stop(self) -> None:
        """Finish the syncs under way, record their bases, and disconnect."""
        self._stop.set()
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        if self._follow_timer is not None:
            self._follow_timer.cancel()
            self._follow_timer = None
        with contextlib.suppress(Exception):
            async with asyncio.timeout(10):
                while self._tasks:
                    await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        if self._watcher is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._watcher, 2.0)
        await self._replaced.close()
        running = [*self._services, *([self._catching_up] if self._catching_up else [])]
        running += [self._looking] if self._looking is not None else []
        running += self._putting_back  # (they return once stop is set)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        self._services.clear()
        await self._finish_following()
        if self.client is not None and self._state is not None and self._bases:
            with contextlib.suppress(Exception):
                await self._flush_bases(self.client, self._state)
        if self._docs is not None:
            await self._docs.close_all()
        if self.client is not None:
            await self.client.close()
        if self._state is not None:
            self._state.close()
        if self._filter is not None:
            self._filter.close()
        self._lock.release()

    async def _finish_following(self) -> None:
        """Let the checkout's branch and index finish moving to the head (the syncs that just
        ended may have started that): cut half way, the branch would be moved without the
        index, and its git commands left running once the syncer is gone."""
        while (following := self._following) is not None and not following.done():
            await asyncio.wait([following], timeout=10)
            if not following.done():
                following.cancel()
                await asyncio.gather(following, return_exceptions=True)

    # -- scheduling ----------------------------------------------------------------------------

    def schedule(self, path: str, *, remote: bool = False) -> None:
        """Sync ``path`` soon (again, if a sync of it is under way)."""
        if self._stop.is_set() or path in self._refused:
            return
        if remote:
            self._remote.add(path)
        if path in self._tasks:
            self._again.add(path)
            return
        self.idle.clear()
        self.counters.pending = len(self._tasks) + 1
        self._tasks[path] = asyncio.create_task(self._run(path))

    def _live_changed(self, path: str) -> None:
        """An open document changed: write it out after the debounce."""
        if path not in self._timers and not self._stop.is_set():
            loop = asyncio.get_running_loop()
            self._timers[path] = loop.call_later(self.debounce, self._live_due, path)

    def _live_due(self, path: str) -> None:
        self._timers.pop(path, None)
        self.schedule(path)

    async def _run(self, path: str) -> None:
        try:
            while True:
                self._again.discard(path)
                # a save under way is taken whole, and not written over meanwhile; a file a
                # program holds open past the limit (a log) is taken as it is, not waited
                # for again in each round
                quiet = await writers_done(self.root / path, WRITING_LIMIT, self._stop)
                async with self._limit:
                    await self._sync_guarded(path, WRITING_LIMIT if quiet else 0.0)
                if path not in self._again or self._stop.is_set():
                    break
        finally:
            del self._tasks[path]
            self.counters.pending = len(self._tasks)
            self._update_idle()

    async def _sync_guarded(self, path: str, wait: float) -> None:
        self._locks.add(path)
        try:
            await self._sync(path, wait)
            if path not in self._again and self._state is not None:
                self._state.synced(path)  # (scheduled again meanwhile: due until that sync)
        except _Paused:
            self._held.add(path)  # synced once the branch is checked out again
        except (ClientError, ConnectionError, TimeoutError, OSError) as exc:
            if isinstance(exc, ClientError) and exc.code in _REFUSED:
                self._refuse(path, exc)  # the server takes no file of that name, ever
                return
            log.warning("%s: %s; retrying", path, exc)
            self._emit(event="error", path=path, message=str(exc))
            self._retry_later(path)
        except Exception as exc:
            log.exception("%s: sync failed", path)
            self._emit(event="error", path=path, message=str(exc))
            self._retry_later(path)
        finally:
            self._locks.discard(path)

    def _refuse(self, path: str, exc: ClientError) -> None:
        """Leave ``path`` out of the sync (reported once): a name the server refuses."""
        self._refused.add(path)
        self._remote.discard(path)
        if self._state is not None:
            self._state.synced(path)
        log.warning("%r: not synced: %s", path, exc)  # (%r: a name may hold a line break)
        self._emit(event="error", path=path, message=f"not synced: {exc}")

    def _retry_later(self, path: str) -> None:
        if not self._stop.is_set():
            self._remote.add(path)
            loop = asyncio.get_running_loop()
            self._timers.setdefault(path, loop.call_later(1.0, self._live_due, path))

    def _update_idle(self) -> None:
        pushing = self._pushes is not None and self._pushes.pending
        following = self._following is not None and not self._following.done()
        quiet = not (self._tasks or self._bases or pushing or self._timers or following)
        catching_up = self._catching_up is not None and not self._catching_up.done()
        behind = self._checkout is not None and self._head and self._followed != self._head
        if quiet and not catching_up:
            if behind:
                # every file is written: git in the tree may now see the branch as it is
                self._follow_now()
                return
            self.idle.set()
        elif behind and not following and not self._follow_timer and not self._stop.is_set():
            # Typing that never pauses never leaves the tree quiet: git in it would see
            # minutes of others' commits as changes of its own (and `git checkout -- FILE`
            # would take them back out). The checkout follows a moment later all the same:
            # by then the files hold the branch's text (and the live edits typed since).
            self._follow_timer = asyncio.get_running_loop().call_later(
                FOLLOW_LATEST, self._follow_late
            )

    def _follow_now(self) -> None:
        if self._follow_timer is not None:
            self._follow_timer.cancel()
            self._follow_timer = None
        self._following = asyncio.create_task(self._follow_head(self._head))

    def _follow_late(self) -> None:
        """Follow the head now, whatever is under way (the branch may be moving on: its
        commits come faster than the syncer catches up with them)."""
        self._follow_timer = None
        following = self._following is not None and not self._following.done()
        if self._stop.is_set() or following or self._followed == self._head:
            return
        self._follow_now()

    async def _follow_head(self, head: str) -> None:
        assert self._checkout is not None
        try:
            await self._checkout.follow(head)
        finally:
            self._followed = head
            self._following = None  # (this task is not done until it returns)
            self._update_idle()

    async def wait_idle(self, timeout: float | None = 30.0) -> None:
        """Wait until nothing is pending: every change seen so far is on both sides and its
        base recorded."""
        async with asyncio.timeout(timeout):
            while True:
                await self.idle.wait()
                await asyncio.sleep(0.05)
                if self.idle.is_set():
                    return

    # -- the branch checked out ----------------------------------------------------------------

    async def _on_branch(self, *, wait: bool = True) -> bool:
        """Whether the tree has the branch checked out, once no git command holds its index
        (a checkout writes the files first, then moves HEAD); if not, pause, and raise
        :class:`_Paused` (return False, without ``wait``). Resume if it has it again."""
        watch = self._head_watch
        assert watch is not None
        ref = await watch.settled(self._stop)
        if ref == watch.ref:
            self._resume()
            return True
        self._pause(ref)
        if wait:
            raise _Paused
        return False

    def _may_change(self) -> bool:
        """Just before a change goes to either side: raise :class:`_Paused` if the tree has
        another branch checked out now; False if a git command is at work on it (a checkout
        may be writing the other branch's files: the change waits for it)."""
        watch = self._head_watch
        assert watch is not None
        if not watch.on_branch():
            self._pause(checked_out(self.root))
            raise _Paused
        return not watch.git_at_work()

    def _head_moved(self) -> None:
        """HEAD changed (the watcher saw it): pause or resume at once, not at the next sync."""
        if self._looking is None or self._looking.done():
            self._looking = asyncio.create_task(self._look_at_head())

    async def _look_at_head(self) -> None:
        await self._on_branch(wait=False)

    def _pause(self, ref: str | None) -> None:
        """Stop syncing while the tree has ``ref`` (``None``: a commit) checked out: its files
        are not the branch's, and the branch's are not to be written over them. Every sync
        asked for meanwhile waits (:attr:`_held`), and so does following the branch."""
        what = shown(ref)
        if self._paused == what:
            return
        self._paused = what
        message = (
            f"{self.root} has {what} checked out, not {self.branch}: the sync is paused until "
            f"{self.branch} is checked out again (git checkout {self.branch})"
        )
        log.warning("%s", message)
        self._emit(event="paused", checked_out=what, message=message)

    def _resume(self) -> None:
        """The branch is checked out again: the syncs that waited run, merged against the
        bases as any change, and the branch is followed again."""
        if self._paused is None:
            return
        self._paused = None
        log.info("%s has %s checked out again: the sync goes on", self.root, self.branch)
        self._emit(event="resumed", branch=self.branch)
        self._followed = ""  # (not moved meanwhile: another branch was checked out)
        held, self._held = self._held, set()
        for path in sorted(held):
            self.schedule(path)
        self._kick_catch_up()

    # -- one file --------------------------------------------------------------------------

    def _base(self, path: str) -> bytes | None:
        if path in self._bases:
            return self._bases[path]
        assert self._state is not None
        return self._state.base(path)

    def _set_base(self, path: str, data: bytes | None) -> None:
        self._bases[path] = data
        self._base_digests[path] = None if data is None else digest(data)
        self._bases_due.set()

    async def _sync(self, path: str, wait: float) -> None:
        """Sync ``path``; a program writing it is waited for up to ``wait`` seconds before
        each read."""
        assert self._docs is not None and self._state is not None
        full = self.root / path
        await self._on_branch()
        if await self._sync_link(path, full):
            return
        await self._sync_mode(path, full)
        settled = False
        for _round in range(_TRIES):
            while (moving := self._moving.get(path)) is not None:
                await moving.wait()  # renamed on disk: committed with its new name
            await self._on_branch()  # (a checkout of another branch may have begun)
            # a save under way is taken whole: waited for where the system tells (a lease),
            # and read again if the file changed while it was read
            read = await read_when_written(full, wait, self._stop)
            if read is None:
                continue
            disk, stamp = read
            base = self._base(path)
            # emptied or gone (a save may be half way), or new and still empty
            if not settled and ((base and not disk) or (base is None and disk == b"")):
                settled = True  # an editor may be half way through a save: look again
                await asyncio.sleep(self.settle)
                continue
            if disk == b"" and base is None and path not in self._tree:
                await self._new_empty_file(path)
                return
            if self._by_git(path, disk, base):
                await self._sync_by_git(path, full, disk, base)
                return
            if base is None and disk and path not in self._tree and await self._renamed(path, disk):
                return
            document = self._docs.get(path)
            if document is None:
                if path not in self._remote and disk is not None and disk == base:
                    return  # an echo of our own write, or a touch: nothing new on disk
                if path not in self._remote and disk is None and base is None:
                    return
                try:
                    document = await self._docs.open(path)
                except ClientError as exc:
                    if exc.code not in _NOT_LIVE:
                        raise
                    self._git_paths.add(path)
                    continue
            self._remote.discard(path)
            if await self._sync_text(path, full, document, disk, base, stamp):
                return
        raise RuntimeError(f"saves kept racing the sync of {path}")

    async def _sync_text(
        self,
        path: str,
        full: Path,
        document: Document,
        disk: bytes | None,
        base: bytes | None,
        stamp: Stamp | None,
    ) -> bool:
        """One round for a text file with a live document, whose file held ``disk`` with
        ``stamp``; False if a save raced it."""
        live = str(document.text)
        if disk is None and base is not None:  # deleted on disk
            if live == base.decode("utf-8"):
                target = self._rename_target(path, base)
                if target is not None:
                    await self._commit_rename(path, target, base)
                else:
                    await self._delete_live(path, base)
                return True
            self._conflict(path, "deleted on disk, changed live: the live text is kept")
            base, disk_text = None, ""
        elif base is not None and path in self._gone and live == "":  # deleted at the server
            self._gone.discard(path)
            if disk == base:
                with contextlib.suppress(Raced):
                    remove_file(full, digest(disk))
                    self._set_base(path, None)
                    await self._docs_close(path)
                    self._emit(event="delete", path=path, side="disk")
                    return True
                return False
            self._conflict(path, "deleted at the server, changed on disk: the file is kept")
            base = None
        base = self._settle_sent(path, base, disk, live)
        base, stale = self._before_stale_save(path, base, disk)
        disk_text = (disk or b"").decode("utf-8")
        base_text = "" if base is None else base.decode("utf-8")
        if disk is None and base is None and live == "":
            self._forget_stale(path, stale)
            await self._docs_close(path)
            return True
        outcome = reconcile(base_text, disk_text, live)
        if (outcome.live is not None or outcome.disk is not None) and not self._may_change():
            return False  # a git command is at work on the tree: looked at again after it
        if outcome.live is not None or outcome.disk is not None:
            assert self._state is not None
            self._state.note_sent(
                path,
                outcome.base.encode("utf-8"),
                live=outcome.live is not None,
                disk=outcome.disk is not None,
            )
        if outcome.live is not None and stamp_of(full) != stamp:
            return False  # saved again since it was read: nothing of it goes live yet
        if outcome.live is not None:
            edits = diff_edits(live, outcome.live)
            with document.doc.transaction():
                apply_edits(document.text, live, edits)
            self.counters.edits += 1
        if outcome.disk is not None:
            try:
                self._write(path, full, outcome.disk.encode("utf-8"), disk)
            except Raced:
                if outcome.live is not None:  # the live text holds the disk text we read
                    self._set_base(path, disk_text.encode("utf-8"))
                    self._forget_stale(path, stale)  # (that save is merged)
                return False
            self.counters.writes += 1
        # the save is merged: the versions it may have been made from are forgotten (not
        # before: a round that a newer save raced merges that one against them, too)
        self._forget_stale(path, stale)
        if outcome.conflict:
            self._conflict(path, "changed on disk and live: conflict markers written")
        self._set_base(path, outcome.base.encode("utf-8"))
        if outcome.direction != "none":
            self._emit(
                event="sync", path=path, direction=outcome.direction, conflict=outcome.conflict
            )
        return True

    def _settle_sent(
        self, path: str, base: bytes | None, disk: bytes | None, live: str
    ) -> bytes | None:
        """The base to merge with, after a syncer that died before its last change of
        ``path`` was acknowledged: the text it sent if every side it was changing holds it
        (the change arrived, whatever was done there since), else the base recorded before
        it (it did not, or only partly: the merge against the older base brings it again)."""
        if path in self._bases or self._state is None:
            return base
        noted = self._state.sent(path)
        if noted is None:
            return base
        sent, to_live, to_disk = noted
        arrived_live = not to_live or _holds(base, sent, live.encode("utf-8"))
        arrived_disk = not to_disk or (disk is not None and _holds(base, sent, disk))
        return sent if arrived_live and arrived_disk else base

    def _write(self, path: str, full: Path, data: bytes, disk: bytes | None) -> None:
        """Replace the file, which held ``disk`` (else :class:`Raced`), and keep what it
        held and the replaced file in view: a save may come that was made from it, and a
        program may be writing it still."""
        replaced = write_atomically(full, data, _hash(disk), keep=True)
        self._written[path] = digest(data)
        if disk is None:
            self._take_mode(path, full)
        if replaced is not None:
            self._replaced.add(path, replaced)
            self._note_overwritten(path, replaced.data)

    def _note_overwritten(self, path: str, before: bytes) -> None:
        """The syncer just replaced ``before`` on disk: a save may come that was made from it
        (forgotten after :data:`STALE_WINDOW`)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        kept = [(data, when) for data, when in self._overwritten.get(path, ()) if data != before]
        versions = [*_recent(kept, now), (before, now)]
        self._overwritten[path] = versions[-_STALE_VERSIONS:]
        loop.call_later(STALE_WINDOW, self._forget_overwritten, path)

    def _forget_overwritten(self, path: str) -> None:
        versions = _recent(self._overwritten.get(path, []), asyncio.get_running_loop().time())
        if versions:
            self._overwritten[path] = versions
        else:
            self._overwritten.pop(path, None)

    def _before_stale_save(
        self, path: str, base: bytes | None, disk: bytes | None
    ) -> tuple[bytes | None, list[tuple[bytes, float]]]:
        """The base for a save that came just after the syncer wrote the file: the content
        it was made from, of those the syncer's last writes replaced and ``base`` (an
        editor's stale buffer, a burst of saves; see :func:`~.reconcile.stale_base`); and
        the records of those writes it looked at, to forget once the save is merged
        (:meth:`_forget_stale`)."""
        replaced = self._overwritten.get(path)
        if replaced is None or base is None or disk is None or disk == base:
            return base, []  # (the write's own echo keeps the record)
        versions = [data for data, _when in _recent(replaced, asyncio.get_running_loop().time())]
        if not versions:
            return base, list(replaced)
        texts = [data.decode("utf-8") for data in [*versions, base]]
        return stale_base(disk.decode("utf-8"), texts).encode("utf-8"), list(replaced)

    def _forget_stale(self, path: str, used: list[tuple[bytes, float]]) -> None:
        """Forget the records of the syncer's writes that a merged save was checked against
        (those of writes made since stay)."""
        if not used:
            return
        kept = [record for record in self._overwritten.get(path, ()) if record not in used]
        if kept:
            self._overwritten[path] = kept
        else:
            self._overwritten.pop(path, None)

    def _put_back(self, path: str, data: bytes, before: bytes) -> None:
        """A program went on writing the file a write of ``path`` replaced, ``before`` as it
        was then, and left ``data`` in it: its save, which it thinks is in the file. Put it
        there, to be merged (against ``before``) like a save that came just after the write,
        unless a newer save, or a deletion, came since (see :meth:`_put_back_whole`)."""
        task = asyncio.create_task(self._put_back_whole(path, data, before))
        self._putting_back.add(task)
        task.add_done_callback(self._putting_back.discard)

    async def _put_back_whole(self, path: str, data: bytes, before: bytes) -> None:
        """Put a late save back once the file is not being written (a newer save under way
        is waited for, and then it is the file's content: the late save is dropped, as the
        newer one is made from the program's buffer, which holds it)."""
        full = self.root / path
        for _round in range(_TRIES):
            if (read := await read_when_written(full, WRITING_LIMIT, self._stop)) is not None:
                break
        else:
            read = (read_bytes(full), None)
        current = read[0]
        if self._stop.is_set() or current is None or current == data:
            return
        if digest(current) != self._written.get(path):
            return  # saved again since the write this save went into replaced
        log.info("%s: a save went on in the file a write replaced: it is put back", path)
        try:
            self._write(path, full, data, current)
        except Raced:
            return  # a newer save
        self._note_overwritten(path, before)
        self.schedule(path)

    async def _docs_close(self, path: str) -> None:
        if self._docs is not None:
            await self._docs.close(path)

    async def _renamed(self, path: str, data: bytes) -> bool:
        """``path``, new on disk, holds what a file of the branch that is gone from disk held
        last (``mv``, an editor's rename): commit both in one commit, a rename, as git shows
        it (:meth:`_commit_rename`). False if there is no such file."""
        source = self._rename_source(path, data)
        if source is None:
            return False
        done = self._moving[source] = self._moving[path] = asyncio.Event()  # (see _sync)
        try:
            # an editor's save may move the file aside for a moment (and write it anew): a
            # rename is a file that stays gone
            await asyncio.sleep(self.settle)
        finally:
            del self._moving[source], self._moving[path]
            done.set()
        if (
            os.path.lexists(self.root / source)
            or read_bytes(self.root / path) != data
            or self._base_digest(source) != digest(data)
        ):
            return False
        await self._commit_rename(source, path, data)
        return True

    def _rename_target(self, source: str, data: bytes) -> str | None:
        """A file new on disk and waiting for its sync that holds ``data``, the base of
        ``source``, which is gone from disk, under the same name in another folder: the two
        are a rename (``mv`` of a folder, whose old files may be synced before the new)."""
        name = source.rpartition("/")[2]
        for path in sorted(self._tasks):
            if path == source or path.rpartition("/")[2] != name:
                continue
            if path in self._tree or path in self._moving or path in self._git_paths:
                continue
            if self._base(path) is not None or (self._docs and self._docs.get(path)):
                continue
            if read_bytes(self.root / path) == data:
                return path
        return None

    async def _commit_rename(self, source: str, path: str, data: bytes) -> None:
        """Commit the deletion of ``source`` and ``path`` holding ``data`` (``source``'s
        base) in one commit. The server then tells the editors of the old path where it
        went, and carries edits of it not committed yet to the new one; as a deletion and a
        new file, the old path's document would only be emptied. The two files' own syncs
        wait meanwhile."""
        if not self._may_change():  # (both or neither: looked at again after git)
            self.schedule(source)
            self.schedule(path)
            return
        done = self._moving[source] = self._moving[path] = asyncio.Event()
        try:
            # the deletion only of the text the disk had: one the branch has since (edits
            # committed meanwhile) is not dropped, and the file is synced again instead
            deleted, added = await asyncio.gather(
                self._commit_by_git(source, None, _blob_id(data)),
                self._commit_by_git(path, data, None),
            )
        finally:
            del self._moving[source], self._moving[path]
            done.set()
        if deleted:
            self._set_base(source, None)
            await self._docs_close(source)
            self._emit(event="delete", path=source, side="live", renamed_to=path)
        if added:
            self._set_base(path, data)
            self._emit(event="sync", path=path, direction="git", conflict=False)

    def _rename_source(self, path: str, data: bytes) -> str | None:
        """The file of the branch that ``path`` was renamed from: gone from disk, its base
        ``data``; of several, one with the same name in another directory first."""
        key = digest(data)
        assert self._state is not None and self._filter is not None
        found = []
        waiting = {source for source, pending in self._base_digests.items() if pending == key}
        for source in self._state.paths_with(key) | waiting:
            if source not in self._tree:
                continue
            if source == path or source in self._moving or source in self._git_paths:
                continue
            if self._base_digest(source) != key:
                continue
            if not self._filter.wanted(source) or os.path.lexists(self.root / source):
                continue
            found.append(source)
        if not found:
            return None
        name = path.rpartition("/")[2]
        return min(found, key=lambda source: (source.rpartition("/")[2] != name, source))

    def _base_digest(self, path: str) -> str | None:
        """The hash of ``path``'s base (``None``: it has none)."""
        if path in self._bases:  # a base waiting for the server's ack
            return self._base_digests[path]
        assert self._state is not None
        return self._state.digest_of(path)

    async def _delete_live(self, path: str, base: bytes) -> None:
        """The file was deleted on disk, unchanged live (it holds ``base``): delete it on
        the branch, if the branch still holds that text (an edit made live meanwhile is
        committed before the push is taken: the file is synced again, and the edit kept)."""
        if not await self._commit_by_git(path, None, _blob_id(base)):
            return
        self._set_base(path, None)
        await self._docs_close(path)
        self._emit(event="delete", path=path, side="live")

    # -- files through git -------------------------------------------------------------------

    def _by_git(self, path: str, disk: bytes | None, base: bytes | None) -> bool:
        if path in self._git_paths:
            return True
        for data in (disk, base):
            if data is not None and (len(data) > self.max_file or not is_text(data)):
                self._git_paths.add(path)
                return True
        return False

    async def _sync_by_git(
        self, path: str, full: Path, disk: bytes | None, base: bytes | None
    ) -> None:
        assert self._checkout is not None
        entry = self._tree.get(path)
        remote = await self._blob(entry)
        if remote not in (base, disk) and (remote is None or self._live_text(remote)):
            # the head last fetched may lack live edits that the base and the disk have (or
            # a file made live): the server's text, not a change of its own
            entry = await self._server_entry(path)
            remote = await self._blob(entry)
        self._remote.discard(path)
        if disk == base:
            if remote == base:
                return
            try:
                if remote is None:
                    remove_file(full, _hash(disk))
                    self._emit(event="delete", path=path, side="disk")
                else:
                    write_atomically(full, remote, _hash(disk))
                    if disk is None:
                        self._take_mode(path, full)
                    self.counters.writes += 1
                    self._emit(event="sync", path=path, direction="git", conflict=False)
            except Raced:
                self.schedule(path)
                return
            self._set_base(path, remote)
            return
        read = None if entry is None else entry.sha  # what the change is made from
        if remote not in (base, disk):
            # (in a thread: a merge of two large texts much changed takes seconds)
            merged = await asyncio.to_thread(_merged_text, base, disk, remote)
            if merged is not None:  # text on every side: merged three-way, as git would
                await self._merge_by_git(path, full, disk, remote, read, *merged)
                return
            self._conflict(path, "changed on disk and at the server: the disk version is kept")
        if remote != disk and not await self._commit_by_git(path, disk, read):
            return  # changed at the server meanwhile: synced again
        self._set_base(path, disk)
        self._emit(event="sync", path=path, direction="git", conflict=False)

    def _live_text(self, data: bytes) -> bool:
        """Whether the server keeps ``data`` as a live document (which may hold edits that
        no commit has yet)."""
        return len(data) <= self.max_file and is_text(data)

    async def _server_entry(self, path: str) -> TreeEntry | None:
        """``path`` at the branch's head at the server, the live edits committed first."""
        assert self.client is not None and self._checkout is not None
        with contextlib.suppress(ClientError):  # (then the head as it is)
            await self.client.commit(self.repo, self.branch)
        head = await self._checkout.fetch()
        if head != self._head:
            self._kick_catch_up()  # (followed as any new head)
        return (await self._checkout.tree(head)).get(path)

    async def _merge_by_git(
        self,
        path: str,
        full: Path,
        disk: bytes | None,
        remote: bytes | None,
        read: str | None,
        merged: bytes,
        conflict: bool,
    ) -> None:
        """A file synced through git that changed on disk and at the server since its base:
        ``merged``, their three-way merge, goes to both sides (conflicting lines as markers,
        as ``git merge`` writes them)."""
        if merged != disk:
            try:
                write_atomically(full, merged, _hash(disk))
            except Raced:  # saved again meanwhile: merged at the next pass
                self.schedule(path)
                return
            self.counters.writes += 1
        if merged != remote and not await self._commit_by_git(path, merged, read):
            # changed at the server meanwhile: merged again, against the server's text that
            # the file now holds (against the old base, the server's changes the file holds
            # would be the file's own, and merge with themselves into conflicts)
            self._set_base(path, remote)
            return
        self._set_base(path, merged)
        if conflict:
            self._conflict(path, "changed on disk and at the server: merged, with conflict markers")
        self._emit(event="sync", path=path, direction="merged", conflict=conflict)

    async def _new_empty_file(self, path: str) -> None:
        """A new empty file (a package's ``__init__.py``): no live edit can make it, so it
        is committed through git; from then on it is a text file like any other."""
        if self._docs is not None and self._docs.get(path) is not None:
            await self._docs_close(path)  # an empty document, which nothing would commit
        if not await self._commit_by_git(path, b"", None):  # (made live meanwhile: merged)
            return
        self._set_base(path, b"")
        self._emit(event="sync", path=path, direction="git", conflict=False)

    async def _commit_by_git(self, path: str, data: bytes | None, read: object = ANY) -> bool:
        """Commit ``data`` (``None``: a deletion) as ``path`` on the branch and push it.
        ``read``: the blob the change was made from (``None``: no file); if the branch has
        another by then, nothing is committed, the file is synced again, and ``False``
        returned (``data``, made over the older text, would undo the newer)."""
        assert self._pushes is not None
        if not self._may_change():
            self.schedule(path)  # (looked at again once git is done)
            return False
        try:
            await self._pushes.commit(path, data, read)
        except FileMoved:
            self.schedule(path)
            self._kick_catch_up()
            return False
        finally:
            self.counters.pushes = self._pushes.count
        if data is not None:
            self._files_made_folders(path)
        return True

    def _files_made_folders(self, path: str) -> None:
        """``path`` was committed where the branch had a file at one of its folders, a file
        made a folder on disk (it was read there): git took that file off the branch with
        the commit. Gone from both sides, it has no base any more (a file made there again
        is new, not a change made over a deletion at the server)."""
        folder = path.rpartition("/")[0]
        while folder:
            if self._base_digest(folder) is not None:
                self._set_base(folder, None)
                self._emit(event="delete", path=folder, side="live")
            folder = folder.rpartition("/")[0]

    async def _pushed(self, head: str) -> None:
        assert self._checkout is not None
        self._set_tree(await self._checkout.tree(head))

    def _set_tree(self, tree: dict[str, TreeEntry]) -> None:
        """``tree``: the branch's files at the head last fetched (synced even where a
        ``.gitignore`` matches them, as git tracks them)."""
        self._tree = tree
        if self._filter is not None:
            self._filter.track(tree)

    # -- bases ---------------------------------------------------------------------------------

    async def _record_bases(self, client: Client, state: SyncState) -> None:
        """Record bases once the server has durably taken the edits they stand for."""
        while True:
            await self._bases_due.wait()
            self._bases_due.clear()
            try:
                await self._flush_bases(client, state)
            except (ConnectionError, TimeoutError, ClientError) as exc:
                log.info("bases wait for the server: %s", exc)
                self._bases_due.set()
                await asyncio.sleep(0.5)
            self._update_idle()

    async def _flush_bases(self, client: Client, state: SyncState) -> None:
        taken = dict(self._bases)
        await client.flush()
        for path in list(taken):
            if self._docs is not None and self._docs.refused_as_full(path):
                # the server refused the text as too large for a live document: it goes
                # through git, from the base recorded before it
                del taken[path]
                self._bases.pop(path, None)  # (the base recorded before it stands)
                self._base_digests.pop(path, None)
                self._git_paths.add(path)
                self._emit(
                    event="error",
                    path=path,
                    message="too large for the server's live documents: committed through git",
                )
                self.schedule(path)
        state.set_bases({path: data for path, data in taken.items() if data is not None})
        state.forget(path for path, data in taken.items() if data is None)
        for path, data in taken.items():
            if self._bases.get(path, b"\0missing") is data:
                del self._bases[path]
                del self._base_digests[path]
        self.counters.synced = len(state.paths())
        self._emit(event="status")

    # -- the server's side ---------------------------------------------------------------------

    async def _events(self, client: Client) -> None:
        """Follow the repository's events: open the documents others join, and fetch the
        branch when it moves (commits, pushes, merges)."""
        while True:
            event = (await client.events.get()).data
            if event.get("branch") != self.branch:
                continue
            kind = event.get("kind")
            if kind == "presence" and event.get("action") == "join":
                path = str(event.get("path", ""))
                if (
                    event.get("user") != client.user
                    and self._filter is not None
                    and self._filter.wanted(path)
                    and (self._docs is None or self._docs.get(path) is None)
                ):
                    self.schedule(path, remote=True)
            elif kind in ("commit", "ref"):
                self._kick_catch_up()

    def _reconnected(self, client: Client) -> None:
        """The connection is back: the events sent while it was away are lost, so the branch
        is fetched and followed (a push made meanwhile reaches the disk)."""
        if self._stop.is_set():
            return
        self._services = [task for task in self._services if not task.done()]
        self._services.append(asyncio.create_task(self._catch_up_after_reconnect(client)))

    async def _catch_up_after_reconnect(self, client: Client) -> None:
        # subscribed again first (the client renews it, unanswered): a push after the fetch
        # below is told as an event
        with contextlib.suppress(ClientError, ConnectionError, TimeoutError):
            await client.call("events.subscribe", repo=self.repo)
        self._kick_catch_up()

    def _kick_catch_up(self) -> None:
        if self._catching_up is not None and not self._catching_up.done():
            self._catch_up_again = True
            return
        self.idle.clear()
        self._catching_up = asyncio.create_task(self._catch_up())

    async def _catch_up(self) -> None:
        assert self._checkout is not None and self._state is not None
        try:
            while True:
                self._catch_up_again = False
                if not await self._on_branch(wait=False):
                    break  # followed once the branch is checked out again
                head = await self._checkout.fetch()
                if head != self._head:
                    await self._follow(self._checkout, self._state, head)
                if not self._catch_up_again:
                    break
        except Exception:
            log.exception("following the branch failed")
        finally:
            self._catching_up = None
            self._update_idle()

    async def _follow(self, checkout: Checkout, state: SyncState, head: str) -> None:
        """Sync the files that changed on the branch between the last head seen and ``head``.

        ``head`` is recorded with those files as due, before their syncs begin; each is no
        longer due once its sync has run (see :meth:`_sync_guarded`): a syncer killed before
        it wrote them all syncs the others at its next start."""
        changed = await checkout.changed(self._head, head)
        old_tree = self._tree
        self._set_tree(await checkout.tree(head))
        await self._classify(checkout, changed)
        blobs = await checkout.blobs(self._tree[path].sha for path in changed if path in self._tree)
        due: list[str] = []
        for path in changed:
            if self._filter is None or not self._filter.wanted(path, tracked=path in old_tree):
                continue
            if await self._follow_link(path, old_tree.get(path)):
                continue
            await self._follow_mode(path, old_tree.get(path))
            if path not in self._tree:
                if path in old_tree:
                    self._gone.add(path)
                due.append(path)
                continue
            if blobs.get(self._tree[path].sha) == self._base(path):
                continue  # the commit holds what both sides already have
            # (also a file whose document is open: its live edits arrive by themselves, but
            # it stays due until a sync of it has run since)
            due.append(path)
        self._head = head
        state.set_head(head, due)
        for path in due:
            self.schedule(path, remote=True)

    # -- the executable bit ----------------------------------------------------------------------

    async def _follow_mode(self, path: str, old: TreeEntry | None) -> None:
        """The branch moved: a file whose mode it changed (and the disk had the old one)
        takes the new one; a file on disk with a mode the branch lacks (made executable, or
        new and executable: a live file is committed as not) gives it to the branch."""
        entry = self._tree.get(path)
        full = self.root / path
        if (
            entry is not None
            and old is not None
            and old.mode != entry.mode
            and entry.mode in (EXECUTABLE, REGULAR)
            and disk_mode(full) == old.mode
        ):
            if set_disk_mode(full, entry.mode):
                self._emit(event="mode", path=path, mode=entry.mode, side="disk")
            return
        await self._sync_mode(path, full)

    async def _sync_mode(self, path: str, full: Path) -> None:
        """A file on disk whose mode is not the branch's: made executable (or not) there."""
        entry = self._tree.get(path)
        if entry is None or entry.mode not in (EXECUTABLE, REGULAR):
            return
        disk = disk_mode(full)
        if disk is not None and disk != entry.mode:
            await self._push_mode(path, disk, entry.sha)

    async def _push_mode(self, path: str, mode: str, sha: str) -> None:
        """Commit ``path`` with ``mode``, its content as the branch has it (``sha``)."""
        assert self._checkout is not None
        try:
            head = await self._checkout.commit_and_push(
                {}, f"collab sync: {path} made {_MODE_WORDS[mode]}", {path: sha}, {path: mode}
            )
        except FileMoved:  # changed at the server meanwhile: seen when the branch is followed
            self._kick_catch_up()
            return
        except GitError as exc:
            log.warning("%s: its mode could not be committed: %s", path, exc)
            return
        await self._pushed(head)
        self._emit(event="mode", path=path, mode=mode, side="git")

    # -- symbolic links --------------------------------------------------------------------------

    async def _follow_link(self, path: str, old: TreeEntry | None) -> bool:
        """The branch moved: a symbolic link it made, changed or replaced is made so on disk
        (if the disk still had what the branch had before); True if ``path`` was or is one
        on the branch (it has no live document)."""
        assert self._checkout is not None
        entry = self._tree.get(path)
        was, now = old is not None and old.mode == LINK, entry is not None and entry.mode == LINK
        if not (was or now):
            return False
        full = self.root / path
        shas = [e.sha for e in (old, entry) if e is not None]
        blobs = await self._checkout.blobs(shas)
        before = blobs.get(old.sha) if old is not None else None
        disk_link = link_target(full)
        disk = disk_link if disk_link is not None else read_bytes(full)
        if old is None:
            had_before = disk is None
        else:
            had_before = disk == before and (disk_link is not None) == was
        if not had_before:
            if entry is None or not (now and disk_link == blobs.get(entry.sha)):
                self.schedule(path)  # changed on disk too: the disk's goes to the branch
            return True
        link = blobs.get(entry.sha) if entry is not None and now else None
        self._link_to_disk(path, full, entry, link)
        return True

    def _link_to_disk(
        self, path: str, full: Path, entry: TreeEntry | None, link: bytes | None
    ) -> None:
        """Give the disk what the branch has at ``path`` now: its link (``link``, the
        target), or none (a deletion; or a file the branch made of the link, which the
        file's own sync writes)."""
        if entry is not None and entry.mode == LINK:
            assert link is not None
            write_link(full, link)
            self._emit(event="sync", path=path, direction="git", conflict=False)
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(full)
        if entry is None:
            self._emit(event="delete", path=path, side="disk")
        else:
            self.schedule(path, remote=True)

    async def _sync_link(self, path: str, full: Path) -> bool:
        """A symbolic link on disk, or one on the branch: the disk's goes to the branch as git
        keeps it (mode 120000, its target as the blob); a file made of a link, or a link
        deleted, too. True if ``path`` is one of those (handled here)."""
        assert self._checkout is not None
        entry = self._tree.get(path)
        target = link_target(full)
        if target is None and (entry is None or entry.mode != LINK):
            return False
        linked = entry is not None and entry.mode == LINK
        if linked and target is not None and await self._blob(entry) == target:
            self._remote.discard(path)
            return True  # as the branch has it
        if path in self._remote and await self._take_link(path, full, entry, target):
            return True
        read = None if entry is None else entry.sha
        changes: dict[str, bytes | None]
        modes: dict[str, str] = {}
        if target is not None:
            changes, modes = {path: target}, {path: LINK}
        else:  # the link replaced by a file, or deleted
            data = read_bytes(full)
            changes = {path: data}
            if data is not None:
                modes[path] = disk_mode(full) or REGULAR
        try:
            head = await self._checkout.commit_and_push(
                changes, f"collab sync: {path} from {self.root.name}", {path: read}, modes
            )
        except FileMoved:
            self._kick_catch_up()
            return True
        await self._pushed(head)
        self._emit(event="sync", path=path, direction="git", conflict=False)
        return True

    async def _take_link(
        self, path: str, full: Path, entry: TreeEntry | None, target: bytes | None
    ) -> bool:
        """The branch changed ``path`` (seen at a start, say): its link goes to disk if the
        disk has none there, a link, or the file as last synced; its deletion, if the disk
        has a link. True if so (else the disk's goes to the branch)."""
        self._remote.discard(path)
        if entry is None:
            if path not in self._gone or target is None:
                return False
            self._gone.discard(path)
            self._link_to_disk(path, full, None, None)
            return True
        if entry.mode != LINK:  # a link the branch made a file
            if target is None:
                return False
            self._link_to_disk(path, full, entry, None)
            return True
        disk = read_bytes(full) if target is None else None
        if target is None and disk is not None and disk != self._base(path):
            return False  # a file changed on disk where the branch made a link: it is kept
        link = await self._blob(entry)
        if link is None:
            return False
        self._link_to_disk(path, full, entry, link)
        self._set_base(path, None)
        return True

    async def _blob(self, entry: TreeEntry | None) -> bytes | None:
        if entry is None:
            return None
        assert self._checkout is not None
        return (await self._checkout.blobs([entry.sha])).get(entry.sha)

    def _take_mode(self, path: str, full: Path) -> None:
        """A file just written anew takes the mode the branch gives it."""
        entry = self._tree.get(path)
        if entry is not None and entry.mode == EXECUTABLE:
            set_disk_mode(full, EXECUTABLE)

    async def _classify(self, checkout: Checkout, paths: set[str] | list[str]) -> None:
        """Mark those of ``paths`` whose content at the fetched head is binary or large."""
        entries = [self._tree[path] for path in paths if path in self._tree]
        blobs = await checkout.blobs(entry.sha for entry in entries)
        for entry in entries:
            data = blobs.get(entry.sha)
            if data is not None and (len(data) > self.max_file or not is_text(data)):
                self._git_paths.add(entry.path)

    # -- the disk's side -----------------------------------------------------------------------

    # -- reports -------------------------------------------------------------------------------

    def _conflict(self, path: str, reason: str) -> None:
        if path not in self.counters.conflicted:
            self.counters.conflicted.add(path)
            self.counters.conflicts += 1
        self._emit(event="conflict", path=path, reason=reason)

    def _emit(self, **event: Any) -> None:
        if self._report is not None:
            try:
                self._report(event)
            except Exception:
                log.exception("reporting an event failed")


_MODE_WORDS = {EXECUTABLE: "executable", REGULAR: "not executable"}

MERGE_LIMIT = 8 << 20
"""The largest text file merged three-way when it changed on disk and at the server (bytes;
a larger one keeps the disk's version, as a binary file does)."""


def _recent(versions: list[tuple[bytes, float]], now: float) -> list[tuple[bytes, float]]:
    """Those of ``versions`` replaced within :data:`STALE_WINDOW` of ``now``."""
    return [(data, when) for data, when in versions if now - when < STALE_WINDOW]


def _write_back(root: Path, files: dict[str, bytes]) -> None:
    """Write each of ``files`` whose bytes on disk differ in line endings only (anything
    else is an edit, even one git would count as its own conversion)."""
    for path, data in files.items():
        disk = read_bytes(root / path)
        if disk is not None and disk != data and _lf(disk) == _lf(data):
            with contextlib.suppress(Raced):  # a save just now: an edit
                write_atomically(root / path, data, digest(disk))


def _lf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n")


def _hash(data: bytes | None) -> str | None:
    return None if data is None else digest(data)


def _blob_id(data: bytes) -> str:
    """The id git gives a blob of ``data``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def _merged_text(
    base: bytes | None, disk: bytes | None, remote: bytes | None
) -> tuple[bytes, bool] | None:
    """The three-way merge of a file's texts (its base, disk and remote versions: a missing
    base is an empty file), and whether it has conflict markers; ``None`` unless each is a
    text file there (a deleted or binary side is not merged)."""
    if disk is None or remote is None:
        return None
    if max(len(disk), len(remote), len(base or b"")) > MERGE_LIMIT:
        return None
    if not all(is_text(data) for data in (base, disk, remote)):  # (UTF-8 then)
        return None
    outcome = reconcile(*((data or b"").decode("utf-8") for data in (base, disk, remote)))
    return outcome.base.encode("utf-8"), outcome.conflict


def _holds(base: bytes | None, sent: bytes, text: bytes) -> bool:
    """Whether ``text`` holds the change ``base -> sent`` (see ``holds_change``)."""
    if text == sent:
        return True
    try:
        return holds_change((base or b"").decode("utf-8"), sent.decode("utf-8"), text.decode())
    except UnicodeDecodeError:
        return False
