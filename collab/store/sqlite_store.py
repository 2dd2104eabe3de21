"""``SQLiteStore``: the embedded default ``Store`` (SQLite WAL, written on the event loop,
fsynced in groups behind)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import math
import os
import pathlib
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

from collab.lifecycle import Lifecycle
from collab.store.base import CorruptRecord, Fence, StoredDoc, check_compact, no_fence
from collab.store.log_syncer import LogSyncer

__all__ = [
    "HEADER",
    "LAST_SEQ_SQL",
    "SCHEMA",
    "SET_LAST_SEQ_SQL",
    "SQLiteStore",
    "StoreUnreadable",
    "StoreUnwritable",
    "check_row",
    "create_tables",
    "header_damaged",
    "quick_check",
]

log = logging.getLogger("collab.store")

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    doc_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    data BLOB,
    crc INTEGER,
    PRIMARY KEY (doc_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS docs (
    doc_id TEXT PRIMARY KEY,
    last_seq INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS quarantine (
    doc_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT,
    data BLOB,
    crc INTEGER,
    reason TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (doc_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS authors (
    branch TEXT NOT NULL,
    user TEXT NOT NULL,
    PRIMARY KEY (branch, user)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS recovered (
    doc_id TEXT PRIMARY KEY,
    at REAL NOT NULL,
    note TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS names (
    doc_id TEXT PRIMARY KEY
) WITHOUT ROWID;
"""
"""The store's tables. ``names`` holds every document whose history the store keeps, from its
first record until it is deleted, apart from the records themselves: a repair that finds no
record left of a document named there knows that its history was lost with a damaged page
(see ``collab.store.repair``), rather than taking it for one never written."""

HEADER = b"SQLite format 3\x00"
"""The string every SQLite database file starts with."""

_MAX_KNOWN_SEQS = 10_000  # documents whose last seq the store keeps in memory
_CHECKPOINT_EVERY = 1.0  # seconds at least between the syncer's checkpoints of the log
_LOG_LIMIT = 64 * 1024 * 1024  # log size from which a checkpoint truncates it
_RATE_HORIZON = 0.25  # seconds over which the writer averages the rate of appends
_BUSY_PER_WINDOW = 1.0  # appends to a document per group window from which they wait for company

LAST_SEQ_SQL = """
SELECT MAX(
    COALESCE((SELECT last_seq FROM docs WHERE doc_id = ?1), 0),
    COALESCE((SELECT MAX(seq) FROM records WHERE doc_id = ?1), 0)
)
"""

SET_LAST_SEQ_SQL = """
INSERT INTO docs (doc_id, last_seq) VALUES (?, ?)
ON CONFLICT (doc_id) DO UPDATE SET last_seq = MAX(last_seq, excluded.last_seq)
"""

_INSERT_SQL = "INSERT INTO records (doc_id, seq, kind, data, crc) VALUES (?, ?, ?, ?, ?)"
_NAME_SQL = "INSERT OR IGNORE INTO names (doc_id) VALUES (?)"
_AUTHOR_SQL = "INSERT OR IGNORE INTO authors (branch, user) VALUES (?, ?)"
_AUTHORS_SQL = "SELECT user FROM authors WHERE branch = ?"
_FORGET_SQL = "DELETE FROM authors WHERE branch = ? AND user = ?"

_LOAD_SQL = """
SELECT seq, kind, data, crc FROM records
WHERE doc_id = ?1 AND seq <= ?2 AND seq >= COALESCE(
    (SELECT MAX(seq) FROM records WHERE doc_id = ?1 AND kind = 's' AND seq <= ?2), 0)
ORDER BY seq
"""


@dataclass(slots=True)
class _Append:
    doc_id: str
    data: bytes
    future: asyncio.Future[int]
    made: float
    author: tuple[str, str] | None = None  # (branch, person), written with the record


_SyncWaiter = tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]"]


def _crc(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def _settle(fut: asyncio.Future[Any], result: object, exc: BaseException | None) -> None:
    if fut.done():  # the awaiting coroutine was cancelled
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


def _settle_all(items: list[tuple[asyncio.Future[Any], object, BaseException | None]]) -> None:
    for fut, result, exc in items:
        _settle(fut, result, exc)


class StoreUnreadable(sqlite3.DatabaseError):
    """The store's file cannot be opened as a database (it is damaged past its records, or
    is not a database at all); ``path`` is the file, ``reason`` what SQLite said."""

    def __init__(self, path: pathlib.Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class StoreUnwritable(Exception):
    """The store cannot be opened to be written, for a reason other than damage: a
    permission, a read-only file system, a full disk, an I/O error. Nothing in it is wrong,
    and a repair mends nothing: ``remedy`` says what to do. ``path`` is the file or directory
    at fault, ``reason`` what the system or SQLite said."""

    def __init__(self, path: pathlib.Path, reason: str, remedy: str) -> None:
        super().__init__(f"{path}: {reason}; {remedy}")
        self.path = path
        self.reason = reason
        self.remedy = remedy


_PERMISSION = (
    "this user (uid {uid}) may not write it: give the store, its directory and the files "
    "beside it to the user that runs collab serve, or make them writable"
)
_FULL = "the disk is full: free some space"
_IO = (
    "SQLite could not read or write it: check the disk (the kernel's log), its free space "
    "and the process's file size limit (ulimit -f)"
)
_DAMAGE = ("SQLITE_CORRUPT", "SQLITE_NOTADB")


def _open_failure(path: pathlib.Path, exc: BaseException) -> Exception:
    """What an error opening the store at ``path`` means: damage (``StoreUnreadable``), or
    a store that cannot be written (``StoreUnwritable``, saying why and what to do)."""
    uid = os.geteuid()
    if isinstance(exc, OSError):
        at = pathlib.Path(exc.filename) if exc.filename is not None else path
        reason = exc.strerror or str(exc)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return StoreUnwritable(at, reason, _FULL)
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return StoreUnwritable(at, reason, _PERMISSION.format(uid=uid))
        return StoreUnwritable(at, reason, _IO)
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name.startswith(_DAMAGE) or not isinstance(exc, sqlite3.OperationalError):
        return StoreUnreadable(path, str(exc))
    if name.startswith(("SQLITE_READONLY", "SQLITE_PERM", "SQLITE_CANTOPEN", "SQLITE_AUTH")):
        return StoreUnwritable(path, str(exc), _PERMISSION.format(uid=uid))
    if name.startswith("SQLITE_FULL"):
        return StoreUnwritable(path, str(exc), _FULL)
    return StoreUnwritable(path, str(exc), _IO)


def _check_writable(path: pathlib.Path) -> None:
    """Raise ``StoreUnwritable`` naming the store file, a file beside it (its log) or its
    directory if this process may not write it: SQLite opens a read-only file without a
    word, and every write then fails."""
    effective = os.access in os.supports_effective_ids
    wanted = [(path.parent, os.W_OK | os.X_OK)]
    wanted += [
        (file, os.R_OK | os.W_OK)
        for file in (path, pathlib.Path(f"{path}-wal"), pathlib.Path(f"{path}-shm"))
        if file.exists()
    ]
    for target, mode in wanted:
        if not os.access(target, mode, effective_ids=effective):
            code = errno.EACCES
            with contextlib.suppress(OSError):
                if os.statvfs(target).f_flag & os.ST_RDONLY:
                    code = errno.EROFS
            raise _open_failure(path, OSError(code, os.strerror(code), str(target)))


def header_damaged(path: pathlib.Path) -> bool:
    """Whether the file at ``path`` is long enough to be a database but does not start with
    SQLite's header string (``HEADER``): the rest of it may still read, once that is put
    back (``collab store repair`` does, after checking a copy)."""
    try:
        with open(path, "rb") as file:
            start = file.read(100)
    except OSError:
        return False
    return len(start) == 100 and start[: len(HEADER)] != HEADER


def create_tables(conn: sqlite3.Connection) -> None:
    """Make the store's tables where missing. A store made before the ``names`` table gets
    it filled from its records, once (a read of every leaf page of the records: about 5 s
    for 1.4 GB from a cold disk of the test machine); if a damaged page keeps them from
    being read, it is filled as documents are written to from now on."""
    had_names = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'names'"
    ).fetchone()
    conn.executescript(SCHEMA)
    if had_names:
        return
    try:
        conn.execute("INSERT OR IGNORE INTO names (doc_id) SELECT DISTINCT doc_id FROM records")
    except sqlite3.DatabaseError as exc:
        log.warning("store: the names of its documents cannot all be read (%s)", exc)


class SQLiteStore(Lifecycle):
    """A durable ``Store`` in one SQLite file (WAL mode).

    Written on the event loop, read on a thread, fsynced on another. Appends, compactions and
    deletions are committed to the write-ahead log by the event loop's own connection: a
    commit of a few rows without an fsync takes microseconds, as much as handing it to a
    thread and back would cost, and the pages it writes are the kernel's (page cache). Loads
    and key listings, which may read megabytes, run on a reader thread with a connection of
    its own. Use the store from one event loop.

    Written, then durable: an ``append`` is done once its transaction is committed to the
    log. From then on it survives the server process dying (``kill -9``), and every later
    ``load`` returns it. A syncer thread makes the log durable against a power loss: each
    ``sync()`` is done once an fdatasync of the log, started after every write (append,
    compaction, deletion) made before it had been committed, has returned; ``compact`` and
    ``delete`` wait for one, too. Syncs are grouped: fdatasyncs start at least
    ``sync_window`` apart, and one serves every ``sync()`` waiting (a ``sync()`` after a quiet
    spell is served at once; at 0, every fsync serves the syncs that arrived during the one
    before). A slow disk delays
    ``sync()``, never an ``append``. The syncer also checkpoints the log into the database
    (SQLite's automatic checkpoints, which fsync, are off on the event loop's connection);
    see ``_checkpoint``. An fsync error fails that ``sync()`` and every later
    one: the kernel may have dropped the pages it could not write.

    Commits: the appends made in one turn of the event loop are committed together, at the
    end of the turn (at most ``max_batch`` to a transaction). With a ``group_window`` (none
    unless given), the appends to a document that takes them at least one per window wait
    until the first of them is ``group_window`` old, so that a busy document's commits, and
    its broadcasts, are about that far apart and larger; an append to a quieter document is
    committed at once, however busy the server is with others. A ``load`` or ``keys``
    commits whatever is waiting first, so it sees every append made before it; a ``sync``
    covers the appends waiting, too. ``commits`` counts write transactions, ``appended``
    committed updates and ``syncs`` fsyncs of the log.

    Sequence numbers are allocated per document from a counter that survives ``compact``
    and ``delete``, so a seq is never reused for a document id. An sqlite error fails only
    the requests it affected (a failed batch is retried one append per transaction, so one
    bad append does not fail its neighbours) and the store keeps serving; ``write_failure``
    says why writes fail while they do (a full disk, say), and ``write_errors`` counts them.
    """

    def __init__(
        self,
        path: pathlib.Path,
        *,
        group_window: float = 0.0,
        sync_window: float = 0.0,
        max_batch: int = 1024,
    ) -> None:
        if group_window < 0:
            raise ValueError("group_window must be >= 0")
        if sync_window < 0:
            raise ValueError("sync_window must be >= 0")
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.path = pathlib.Path(path)
        self.group_window = group_window
        self.sync_window = sync_window
        self.max_batch = max_batch
        self.commits = 0
        """Number of write transactions committed."""
        self.appended = 0
        """Number of updates committed."""
        self.observe_write: Callable[[float], None] | None = None
        """Called with the seconds each commit of appends took."""
        self.observe_sync: Callable[[float], None] | None = None
        """Called on the syncer thread with the seconds each fdatasync took."""
        self.write_errors = 0
        """Number of writes (appends, compactions, deletions, ...) that failed."""
        self._write_failure: str | None = None  # why the last write failed, until one succeeds
        self._conn: sqlite3.Connection | None = None  # the event loop's: every write
        self._reader: ThreadPoolExecutor | None = None  # one thread: loads and keys
        self._reading = threading.local()  # the reader thread's connection
        self._syncer: LogSyncer[_SyncWaiter] | None = None
        self._checkpointer: sqlite3.Connection | None = None  # the syncer thread's
        self._checkpoint_at = 0.0
        self._made = 0  # writes (appends, compactions, deletes) committed since the start
        self._pending: list[_Append] = []  # appends not yet committed, oldest first
        self._flush: asyncio.Handle | None = None
        self._flush_at = math.inf
        self._stopping: asyncio.Future[None] | None = None
        # doc id -> (appends per second, when), see _append_rate
        self._rates: dict[str, tuple[float, float]] = {}
        # doc id -> its last committed seq, so that an append needs no read; cleared after
        # any failed write (and when it grows too large)
        self._last_seqs: dict[str, int] = {}
        # (branch, person) -> when they last appended, for the pairs with a row in the
        # authors table: an append by one of them writes no row
        self._authors: dict[tuple[str, str], float] = {}
        # branch -> when its authors were last taken, and who they were
        self._taken: dict[str, tuple[float, list[str]]] = {}

    @property
    def syncs(self) -> int:
        """Number of fsyncs of the write-ahead log since the store was last started."""
        return self._syncer.syncs if self._syncer is not None else 0

    @property
    def write_failure(self) -> str | None:
        """Why writes fail (the disk is full, the file was made read-only...), from a write
        that failed until the next that succeeds; after an fsync error, for good (the
        kernel may have dropped what it could not write). ``None`` while they succeed."""
        error = self._syncer.error if self._syncer is not None else None
        if error is not None:
            return f"fsync failed: {error}"
        return self._write_failure

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Create the directory, file and schema; start the reader and syncer threads.

        Raises ``StoreUnwritable`` when the file, a file beside it or its directory cannot
        be written (a permission, a full disk, an I/O error), ``StoreUnreadable`` when the
        file is damaged past opening, and ``OSError`` when the directory cannot be made."""
        if self._conn is not None:
            return
        try:
            conn, log_path = await asyncio.to_thread(self._open)
        except sqlite3.DatabaseError as exc:
            raise _open_failure(self.path, exc) from exc
        syncer: LogSyncer[_SyncWaiter] = LogSyncer(
            log_path,
            window=self.sync_window,
            release=self._synced,
            name=f"collab-sqlite-syncer:{self.path.name}",
            observe=self.observe_sync,
            after_sync=self._checkpoint,
        )
        try:
            syncer.start()
        except BaseException:  # no syncer, no durability: the store does not start
            await asyncio.to_thread(conn.close)
            raise
        self._made = 0
        self._syncer = syncer
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="collab-sqlite-reader")
        self._conn = conn

    async def stop(self) -> None:
        """Commit every append made, release the syncs handed over, then close the database.

        Requests made after ``stop()`` raise ``RuntimeError``. Stopping a store that is
        not running does nothing; a stopped store can be started again.
        """
        if self._stopping is not None:
            await asyncio.shield(self._stopping)
            return
        conn, syncer, reader = self._conn, self._syncer, self._reader
        if conn is None or syncer is None or reader is None:
            return
        self._stopping = asyncio.get_running_loop().create_future()
        try:
            self._write_pending(everything=True)
            self._conn = None
            await asyncio.to_thread(syncer.stop)  # every sync handed over is released
            if self._checkpointer is not None:
                self._checkpointer.close()
                self._checkpointer = None
            await asyncio.get_running_loop().run_in_executor(reader, self._close_reader)
            reader.shutdown(wait=False)
            await asyncio.to_thread(conn.close)  # the last connection: checkpoints the log
        finally:
            self._reader = None
            self._stopping.set_result(None)
            self._stopping = None

    # -- Store API -----------------------------------------------------------------------

    async def load(self, doc_id: str) -> StoredDoc | None:
        """The document's history as of the call: what a later append adds is not in it,
        though the reading happens on the reader thread after the call returns."""
        conn = self._check_running(doc_id)
        self._write_pending(everything=True)
        bound = self._last_seqs.get(doc_id)
        if bound is None:
            bound = conn.execute(LAST_SEQ_SQL, (doc_id,)).fetchone()[0]
        return cast(
            "StoredDoc | None",
            await self._read(lambda reader, key: self._load(reader, key, bound), doc_id),
        )

    def append(
        self, doc_id: str, update: bytes, fence: Fence | None = None, author: str | None = None
    ) -> asyncio.Future[int]:
        """The future of the update's sequence number, done once it is written (a future,
        not a coroutine: a caller can hand it on without a task)."""
        self._check_running(doc_id)
        no_fence(self, fence)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        now = time.monotonic()
        item = _Append(doc_id, bytes(update), future, now)
        if author is not None:
            noted = (doc_id.partition(":")[0], author)
            if noted not in self._authors:
                item.author = noted
            self._authors[noted] = now
        self._pending.append(item)
        if self._flush_at > now:  # no commit due yet: make sure one comes in time for this
            due = self._due(doc_id, now, now)
            if due < self._flush_at:
                self._schedule(loop, due)
        return future

    def sync(self) -> asyncio.Future[None]:
        """A future done once every write (append, compaction, deletion) made before this
        call is durable (fsynced)."""
        syncer = self._syncer
        if self._conn is None or syncer is None:
            raise RuntimeError("SQLiteStore is not running (call start() first, or it was stopped)")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        syncer.wait(self._made + len(self._pending), (loop, future))
        return future

    async def compact(self, doc_id: str, snapshot: bytes, through_seq: int) -> None:
        """Replace the records through ``through_seq`` with ``snapshot``; durable on return."""
        data = bytes(snapshot)
        self._write(doc_id, "compact", lambda conn: self._compact(conn, doc_id, data, through_seq))
        await self.sync()

    async def delete(self, doc_id: str) -> None:
        """Forget the document's records (its seq counter is kept so seqs are never reused);
        durable on return."""
        self._write(doc_id, "delete", lambda conn: self._delete(conn, doc_id))
        await self.sync()

    async def take_authors(self, branch: str, paths: Collection[str] | None = None) -> list[str]:
        """The people whose appends to documents of ``branch`` were written since their
        commit was settled (:meth:`settle_authors`), kept with the records: neither a crash
        nor a commit that does not land forgets them. (Of the whole branch: ``paths`` is
        not kept apart.)"""
        conn = self._check_running(branch)
        self._write_pending(everything=True)
        rows = conn.execute(_AUTHORS_SQL, (branch,)).fetchall()
        self._taken[branch] = (time.monotonic(), sorted(user for (user,) in rows))
        return self._taken[branch][1]

    def authors_of(self, branch: str, paths: Collection[str] | None) -> list[str]:
        """Those the last take of ``branch`` gave (of the whole branch, whatever ``paths``:
        one node commits a branch's files together)."""
        taken = self._taken.get(branch)
        return [] if taken is None else list(taken[1])

    async def settle_authors(
        self, branch: str, users: Collection[str], paths: Collection[str] | None = None
    ) -> None:
        """The commit naming ``users``, taken last, has landed: forget them, but those who
        appended to ``branch`` since that take (their later edits are not in it)."""
        self._check_running(branch)
        taken_at = self._taken.pop(branch, None)
        if taken_at is None:
            return
        taken = taken_at[0]
        done = []
        for user in users:
            last = self._authors.get((branch, user))
            if last is None or last <= taken:
                self._authors.pop((branch, user), None)
                done.append((branch, user))
        if done:
            self._write(branch, "settle_authors", lambda conn: conn.executemany(_FORGET_SQL, done))

    async def keys(self, prefix: str = "") -> list[str]:
        return cast("list[str]", await self._read(_keys, prefix))

    async def clear_recovered(self, doc_id: str) -> None:
        self._write(
            doc_id,
            "clear_recovered",
            lambda conn: conn.execute("DELETE FROM recovered WHERE doc_id = ?", (doc_id,)),
        )

    async def check_file(self) -> list[str]:
        """What SQLite's ``quick_check`` finds wrong with the file (empty: nothing).

        It reads every page (about 40 s for 1.4 GB from a cold disk of the test machine,
        under a second from the page cache), so it runs on a thread with a connection of its
        own, beside the serving; cancelling the call interrupts the check."""
        conn = await asyncio.to_thread(sqlite3.connect, self.path, check_same_thread=False)
        checking = asyncio.get_running_loop().run_in_executor(None, quick_check, conn)
        try:
            return await asyncio.shield(checking)
        except asyncio.CancelledError:
            # (thread-safe: SQLite's way to stop a statement running; again, should the
            # check not have begun yet, which an interrupt would not stop)
            while not checking.done():
                conn.interrupt()
                await asyncio.wait([checking], timeout=0.05)
            raise
        finally:
            if checking.done():
                conn.close()

    # -- the event loop's writes ---------------------------------------------------------

    def _check_running(self, doc_id: str) -> sqlite3.Connection:
        conn = self._conn
        if conn is None:
            raise RuntimeError("SQLiteStore is not running (call start() first, or it was stopped)")
        if not isinstance(doc_id, str):
            raise TypeError(f"doc_id must be str, not {type(doc_id).__name__}")
        return conn

    def _write(self, doc_id: str, op: str, body: Callable[[sqlite3.Connection], object]) -> object:
        """Commit the appends waiting, then ``body`` in a transaction of its own; what
        ``body`` returned."""
        conn = self._check_running(doc_id)
        self._write_pending(everything=True)
        try:
            result = self._transaction(conn, lambda: body(conn))
        except Exception as exc:
            self._last_seqs.pop(doc_id, None)
            if not isinstance(exc, ValueError):
                log.error("store: %s of %r failed: %s", op, doc_id, exc)
                self._failed(exc)
            raise
        else:
            self._succeeded()
            return result
        finally:
            self._made += 1
            assert self._syncer is not None
            self._syncer.wrote(1)

    def _failed(self, exc: BaseException) -> None:
        """A write failed: writes fail (``write_failure``) until one succeeds."""
        self.write_errors += 1
        self._write_failure = str(exc) or type(exc).__name__

    def _succeeded(self) -> None:
        if self._write_failure is not None:
            log.warning("store: writes succeed again (they failed: %s)", self._write_failure)
            self._write_failure = None

    def _schedule(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._flush is not None:
            self._flush.cancel()
        self._flush_at = when
        delay = when - time.monotonic()
        if delay <= 0:  # at the end of this turn of the loop (the usual case)
            self._flush = loop.call_soon(self._due_now)
        else:
            self._flush = loop.call_later(delay, self._due_now)

    def _due(self, doc_id: str, made: float, now: float) -> float:
        """When an append to ``doc_id`` made at ``made`` is to be committed."""
        if not self.group_window:
            return now
        busy = self._append_rate(doc_id, now) * self.group_window >= _BUSY_PER_WINDOW
        return made + self.group_window if busy else now

    def _due_now(self) -> None:
        self._flush = None
        self._flush_at = math.inf
        if self._conn is not None:
            self._write_pending(everything=False)

    def _write_pending(self, *, everything: bool) -> None:
        """Commit the appends that are due (``everything``: all of them), in transactions of
        at most ``max_batch``; schedule a commit of those still waiting."""
        pending = self._pending
        if not pending:
            return
        now = time.monotonic()
        if everything:
            ready, self._pending = pending, []
        else:
            waiting: dict[str, float] = {}  # doc id -> when its appends are due
            for item in pending:
                if item.doc_id not in waiting:
                    waiting[item.doc_id] = self._due(item.doc_id, item.made, now)
            ready = [item for item in pending if waiting[item.doc_id] <= now]
            self._pending = [item for item in pending if waiting[item.doc_id] > now]
        for start in range(0, len(ready), self.max_batch):
            self._write_batch(ready[start : start + self.max_batch])
        if self._pending and self._flush is None:
            first = min(self._due(a.doc_id, a.made, now) for a in self._pending)
            self._schedule(asyncio.get_running_loop(), first)

    def _transaction(self, conn: sqlite3.Connection, body: Callable[[], object]) -> object:
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = body()
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self.commits += 1
        return result

    def _write_batch(self, batch: list[_Append]) -> None:
        conn = self._conn
        assert conn is not None and self._syncer is not None
        started = time.perf_counter()
        known = self._last_seqs
        last: dict[str, int] = {}
        rows: list[tuple[str, int, str, bytes, int]] = []
        authors = [item.author for item in batch if item.author is not None]
        names: list[tuple[str]] = []  # documents not appended to since the cache was cleared
        seqs: list[int] = []

        def write_rows() -> None:
            conn.executemany(_INSERT_SQL, rows)
            conn.executemany(_AUTHOR_SQL, authors)
            conn.executemany(_NAME_SQL, names)

        def body() -> None:
            for item in batch:
                seq = last.get(item.doc_id)
                if seq is None:
                    seq = known.get(item.doc_id)
                    if seq is None:
                        seq = conn.execute(LAST_SEQ_SQL, (item.doc_id,)).fetchone()[0]
                        names.append((item.doc_id,))
                seq += 1
                last[item.doc_id] = seq
                seqs.append(seq)
                rows.append((item.doc_id, seq, "u", item.data, _crc(item.data)))
            if len(rows) == 1 and not authors and not names:  # one statement, on its own
                conn.execute(_INSERT_SQL, rows[0])
                self.commits += 1
            else:
                self._transaction(conn, write_rows)

        try:
            body()
        except Exception as exc:
            known.clear()  # read the counters back from the database
            for noted in authors:  # their next appends write them again
                self._authors.pop(noted, None)
            if len(batch) > 1:
                log.warning(
                    "store: batch of %d appends failed (%s); retrying one by one", len(batch), exc
                )
                for item in batch:
                    self._write_batch([item])
                return
            log.error("store: append to %r failed: %s", batch[0].doc_id, exc)
            self._failed(exc)
            self._made += 1
            self._syncer.wrote(1)
            _settle(batch[0].future, None, exc)
            return
        if len(known) + len(last) > _MAX_KNOWN_SEQS:
            known.clear()
        known.update(last)
        self._succeeded()
        self.appended += len(batch)
        self._made += len(batch)
        self._syncer.wrote(len(batch))
        self._count_appends(batch, time.monotonic())
        if self.observe_write is not None:
            self.observe_write(time.perf_counter() - started)
        for item, seq in zip(batch, seqs, strict=True):
            _settle(item.future, seq, None)

    def _append_rate(self, doc_id: str, now: float) -> float:
        """The document's committed appends per second, averaged with an exponential decay.

        Per document: only appends to one document share a broadcast, so only a document
        that takes appends quickly has them wait for company."""
        rate, at = self._rates.get(doc_id, (0.0, now))
        return rate * math.exp((at - now) / _RATE_HORIZON)

    def _count_appends(self, batch: list[_Append], now: float) -> None:
        counts: dict[str, int] = {}
        for item in batch:
            counts[item.doc_id] = counts.get(item.doc_id, 0) + 1
        rates = self._rates
        for doc_id, count in counts.items():
            rates[doc_id] = (self._append_rate(doc_id, now) + count / _RATE_HORIZON, now)
        if len(rates) > _MAX_KNOWN_SEQS:  # forget the documents that went quiet
            quiet = now - 10 * _RATE_HORIZON
            self._rates = {doc_id: entry for doc_id, entry in rates.items() if entry[1] > quiet}

    @staticmethod
    def _delete(conn: sqlite3.Connection, doc_id: str) -> None:
        # Appends leave the counter to the records; keep it here before they go.
        last_seq: int = conn.execute(LAST_SEQ_SQL, (doc_id,)).fetchone()[0]
        if last_seq:
            conn.execute(SET_LAST_SEQ_SQL, (doc_id, last_seq))
        conn.execute("DELETE FROM records WHERE doc_id = ?", (doc_id,))
        conn.execute("DELETE FROM names WHERE doc_id = ?", (doc_id,))

    @staticmethod
    def _compact(conn: sqlite3.Connection, doc_id: str, data: bytes, through_seq: int) -> None:
        last_seq: int = conn.execute(LAST_SEQ_SQL, (doc_id,)).fetchone()[0]
        snapshot_seq: int | None = conn.execute(
            "SELECT MAX(seq) FROM records WHERE doc_id = ? AND kind = 's'", (doc_id,)
        ).fetchone()[0]
        check_compact(doc_id, through_seq, last_seq, snapshot_seq)
        conn.execute("DELETE FROM records WHERE doc_id = ? AND seq <= ?", (doc_id, through_seq))
        conn.execute(_INSERT_SQL, (doc_id, through_seq, "s", data, _crc(data)))
        conn.execute(SET_LAST_SEQ_SQL, (doc_id, max(last_seq, through_seq)))
        conn.execute(_NAME_SQL, (doc_id,))

    # -- the reader and the syncer -------------------------------------------------------

    async def _read(self, read: Callable[[sqlite3.Connection, str], object], key: str) -> object:
        """``read(connection, key)`` on the reader thread, once the appends waiting are
        committed (so that it sees every append made before it)."""
        self._check_running(key)
        self._write_pending(everything=True)
        reader = self._reader
        assert reader is not None
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(reader, self._on_reader, read, key)
        except Exception as exc:
            if not isinstance(exc, ValueError):
                log.error("store: reading %r failed: %s", key, exc)
            raise

    def _on_reader(self, read: Callable[[sqlite3.Connection, str], object], key: str) -> object:
        conn: sqlite3.Connection | None = getattr(self._reading, "conn", None)
        if conn is None:
            conn = self._reading.conn = sqlite3.connect(self.path, isolation_level=None)
            conn.execute("PRAGMA busy_timeout = 5000")
        return read(conn, key)

    def _close_reader(self) -> None:
        conn: sqlite3.Connection | None = getattr(self._reading, "conn", None)
        if conn is not None:
            self._reading.conn = None
            conn.close()

    def _checkpoint(self) -> None:
        """After an fsync, on the syncer thread, at most every ``_CHECKPOINT_EVERY``: copy
        the log into the database.

        PASSIVE first: the event loop's writes go on meanwhile, and the log starts over at
        the next write that finds it all copied. Under writes that never pause, that never
        happens; once the log holds ``_LOG_LIMIT`` bytes, a TRUNCATE checkpoint makes the
        event loop's next write wait for it (milliseconds: almost everything is copied by
        then, though the database file is fsynced) and empties the log."""
        now = time.monotonic()
        if now - self._checkpoint_at < _CHECKPOINT_EVERY:
            return
        self._checkpoint_at = now
        try:
            conn = self._checkpointer
            if conn is None:
                conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                conn.execute("PRAGMA busy_timeout = 5000")
                self._checkpointer = conn
            _busy, frames, _copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            page = conn.execute("PRAGMA page_size").fetchone()[0]
            if frames * page >= _LOG_LIMIT:
                log.info("store: the log holds %d pages; truncating it", frames)
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            log.warning("store: checkpoint of %s failed: %s", self.path, exc)

    def _open(self) -> tuple[sqlite3.Connection, pathlib.Path]:
        """The event loop's connection (made on a thread), and the log it writes to."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _check_writable(self.path)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout = 5000")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreUnwritable(
                    self.path,
                    f"could not enable WAL mode (got {mode!r})",
                    "its file system must let SQLite share memory between processes (a "
                    "local disk does; some network file systems do not)",
                )
            conn.execute("PRAGMA synchronous = NORMAL")  # commits are fsynced by the syncer
            conn.execute("PRAGMA wal_autocheckpoint = 0")  # the syncer checkpoints (it fsyncs)
            conn.execute(f"PRAGMA journal_size_limit = {_LOG_LIMIT}")
            create_tables(conn)
            # the log is next to the file SQLite opened (a symlink resolved, a relative path
            # made absolute)
            database = conn.execute("PRAGMA database_list").fetchone()[2]
        except BaseException:
            conn.close()
            raise
        return conn, pathlib.Path(database + "-wal")

    def _synced(self, waiters: list[_SyncWaiter], error: BaseException | None) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
        for loop, future in waiters:
            by_loop.setdefault(loop, []).append((future, None, error))
        for loop, settled in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop has nobody waiting
                loop.call_soon_threadsafe(_settle_all, settled)

    @staticmethod
    def _load(conn: sqlite3.Connection, doc_id: str, through: int) -> StoredDoc | None:
        """The history through seq ``through`` (all of it if a compaction has since folded
        records up to a later seq into a snapshot: it holds the same and more)."""
        conn.execute("BEGIN")  # one snapshot of the database for both reads
        try:
            (newest,) = conn.execute(
                "SELECT MAX(seq) FROM records WHERE doc_id = ? AND kind = 's'", (doc_id,)
            ).fetchone()
            if newest is not None and newest > through:
                through = 1 << 62  # every seq
            rows = conn.execute(_LOAD_SQL, (doc_id, through)).fetchall()
        finally:
            conn.execute("COMMIT")
        recovered = (
            conn.execute("SELECT 1 FROM recovered WHERE doc_id = ?", (doc_id,)).fetchone()
            is not None
        )
        if not rows:
            if recovered:  # a repair found nothing of its history to keep
                last_seq: int = conn.execute(LAST_SEQ_SQL, (doc_id,)).fetchone()[0]
                return StoredDoc(None, last_seq, recovered=True)
            return None
        snapshot: bytes | None = None
        snapshot_seq = 0
        updates: list[tuple[int, bytes]] = []
        corrupt: CorruptRecord | None = None
        for index, (seq, kind, data, crc) in enumerate(rows):
            reason = check_row(kind, data, crc, first=index == 0)
            if reason is not None:
                corrupt = CorruptRecord(doc_id, seq, reason)
                log.error(
                    "store: corrupt record doc=%r seq=%d (%s); it and %d later record(s) "
                    "were not loaded",
                    doc_id,
                    seq,
                    reason,
                    len(rows) - index - 1,
                )
                break
            if kind == "s":
                snapshot, snapshot_seq = data, seq
            else:
                updates.append((seq, data))
        return StoredDoc(snapshot, snapshot_seq, updates, corrupt, recovered)


def quick_check(conn: sqlite3.Connection) -> list[str]:
    """What SQLite's ``quick_check`` finds wrong with the database (empty: nothing)."""
    try:
        rows = conn.execute("PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError as exc:
        return [str(exc)]
    problems = [str(row[0]) for row in rows]
    return [] if problems == ["ok"] else problems


def _keys(conn: sqlite3.Connection, prefix: str) -> list[str]:
    """The ids with records that start with ``prefix``: a range of the primary key, not a
    scan (SQLite compares text as UTF-8 bytes, which is code point order)."""
    sql = "SELECT DISTINCT doc_id FROM records"
    if not prefix:
        return [row[0] for row in conn.execute(sql + " ORDER BY doc_id")]
    last = ord(prefix[-1]) + 1
    if 0xD800 <= last <= 0xDFFF:  # surrogates are not text
        last = 0xE000
    if last > 0x10FFFF:
        rows = conn.execute(
            sql + " WHERE substr(doc_id, 1, ?) = ? ORDER BY doc_id", (len(prefix), prefix)
        )
    else:
        high = prefix[:-1] + chr(last)
        rows = conn.execute(
            sql + " WHERE doc_id >= ? AND doc_id < ? ORDER BY doc_id", (prefix, high)
        )
    return [row[0] for row in rows]


def check_row(kind: object, data: object, crc: object, *, first: bool) -> str | None:
    """Return why a stored row cannot be trusted, or ``None`` if it is sound."""
    if kind not in ("u", "s") or (kind == "s" and not first):
        return f"unexpected record kind {kind!r}"
    if data is None:
        return "data is missing (NULL)"
    if not isinstance(data, bytes):
        return f"data is not a blob ({type(data).__name__})"
    if not isinstance(crc, int):
        return "checksum is missing"
    actual = _crc(data)
    if actual != crc:
        return f"checksum mismatch (stored {crc:#010x}, computed {actual:#010x}, {len(data)} bytes)"
    return None
