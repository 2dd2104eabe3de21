"""``SQLiteStore``: the embedded default ``Store`` (SQLite WAL, a writer thread, grouped fsyncs)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import pathlib
import queue
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, cast

from collab.log_syncer import LogSyncer
from collab.store import CorruptRecord, StoredDoc

__all__ = ["LAST_SEQ_SQL", "SCHEMA", "SET_LAST_SEQ_SQL", "SQLiteStore", "check_row"]

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
CREATE TABLE IF NOT EXISTS recovered (
    doc_id TEXT PRIMARY KEY,
    at REAL NOT NULL,
    note TEXT NOT NULL
) WITHOUT ROWID;
"""

_MAX_KNOWN_SEQS = 10_000  # documents whose last seq the writer keeps in memory
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

_LOAD_SQL = """
SELECT seq, kind, data, crc FROM records
WHERE doc_id = ?1 AND seq >= COALESCE(
    (SELECT MAX(seq) FROM records WHERE doc_id = ?1 AND kind = 's'), 0)
ORDER BY seq
"""


_Op = Literal["append", "clear_recovered", "compact", "delete", "keys", "load", "stop"]
_WRITES = frozenset({"append", "clear_recovered", "compact", "delete"})  # the syncer counts them


@dataclass(slots=True)
class _Request:
    op: _Op
    doc_id: str
    data: bytes
    through_seq: int
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    made: float = field(default_factory=time.monotonic)


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


class SQLiteStore:
    """A durable ``Store`` in one SQLite file (WAL mode).

    All database work happens on one dedicated thread that owns the connection; the async
    methods enqueue a request and await a future that the thread completes through
    ``loop.call_soon_threadsafe``, so the event loop never blocks on disk. Requests are
    served strictly in the order they were made (an ``append`` when it is called: it returns
    the future itself; the others when they are first awaited), so a ``load`` sees every
    earlier ``append`` and a ``compact`` is ordered with the appends around it.

    Written, then durable: an ``append`` is done once its transaction is committed to the
    write-ahead log. From then on it survives the server process dying (``kill -9``), since
    the log's pages are the kernel's, and every later ``load`` returns it. A second thread,
    the syncer, makes the log durable against a power loss: each ``sync()`` is done once an
    fdatasync of the log, started after every write (append, compaction, deletion) made
    before it had returned, has returned; ``compact`` and ``delete`` wait for one, too.
    Syncs are grouped: the syncer waits until the oldest ``sync()`` waiting is
    ``sync_window`` old, then one fdatasync serves all of them (fsyncs under load are at
    least a window apart; at 0, every fsync serves the syncs that arrived during the one
    before). A slow disk delays ``sync()``, never an ``append``: a stalled fsync does not hold
    up the writes behind it. SQLite's own checkpoints (``synchronous=NORMAL``: every 1,000
    pages of log, on the writer's thread) fsync the log and the database before the log is
    reused. An fsync error fails that ``sync()`` and every later one: the kernel may have
    dropped the pages it could not write.

    Write batches: the writer takes the first pending append and every append already
    queued behind it, and commits them in one transaction, then resolves all their futures.
    With a ``group_window`` (none unless given), while appends to the batch's first document
    arrive at least one per window, it also keeps collecting appends until the oldest one in
    the batch is ``group_window`` old (at most ``max_batch`` of them, and only until a request
    of another kind arrives), so that a busy document's commits are about that far apart and
    larger, and so are its broadcasts; an append to a quieter document is committed at once,
    with whatever is queued beside it, however busy the server is with other documents. ``commits`` counts write transactions, ``appended`` committed
    updates and ``syncs`` fsyncs of the log.

    Sequence numbers are allocated per document from a counter that survives ``compact``
    and ``delete``, so a seq is never reused for a document id. A sqlite error fails only
    the requests it affected (a failed batch is retried one append per transaction, so one
    bad append does not fail its neighbours) and the store keeps serving.

    An ``append`` whose awaiting coroutine is cancelled may or may not have been committed.
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
        """Called on the writer thread with the seconds each write of appends took."""
        self.observe_sync: Callable[[float], None] | None = None
        """Called on the syncer thread with the seconds each fdatasync took."""
        self._syncer: LogSyncer[_SyncWaiter] | None = None
        self._made = 0  # writes (appends, compactions, deletes) queued since the store started
        self._submitting = threading.Lock()
        self._queue: queue.SimpleQueue[_Request] | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Future[Any] | None = None
        self._closed = True
        # doc id -> (appends per second, when), see _append_rate; kept by the writer thread
        self._rates: dict[str, tuple[float, float]] = {}
        # doc id -> its last committed seq, kept by the writer thread so that an append
        # needs no read; cleared after any failed write (and when it grows too large).
        self._last_seqs: dict[str, int] = {}

    @property
    def syncs(self) -> int:
        """Number of fsyncs of the write-ahead log since the store was last started."""
        return self._syncer.syncs if self._syncer is not None else 0

    # -- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> SQLiteStore:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Create the directory, file and schema, and start the writer thread."""
        if self._thread is not None:
            return
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        requests: queue.SimpleQueue[_Request] = queue.SimpleQueue()
        self._made = 0
        thread = threading.Thread(
            target=self._run,
            args=(requests, loop, ready),
            name=f"collab-sqlite-writer:{self.path.name}",
            daemon=True,
        )
        thread.start()
        try:
            await ready
        except asyncio.CancelledError:
            # The thread may be up by now: tell it to stop (harmless if it already exited).
            requests.put(_Request("stop", "", b"", 0, loop, loop.create_future()))
            raise
        except BaseException:
            await asyncio.to_thread(thread.join)  # it failed to start and is returning
            raise
        self._queue = requests
        self._thread = thread
        self._closed = False

    async def stop(self) -> None:
        """Commit everything already requested, then close the database.

        Requests made after ``stop()`` raise ``RuntimeError``. Stopping a store that is
        not running does nothing; a stopped store can be started again.
        """
        thread = self._thread
        if thread is None:
            return
        if self._stopping is None:
            assert self._queue is not None
            self._closed = True
            loop = asyncio.get_running_loop()
            self._stopping = loop.create_future()
            self._queue.put(_Request("stop", "", b"", 0, loop, self._stopping))
            self._queue = None
        await asyncio.shield(self._stopping)
        await asyncio.to_thread(thread.join)  # it settles the future just before it returns
        self._thread = None
        self._stopping = None

    # -- Store API -----------------------------------------------------------------------

    async def load(self, doc_id: str) -> StoredDoc | None:
        return cast("StoredDoc | None", await self._submit("load", doc_id))

    def append(self, doc_id: str, update: bytes) -> asyncio.Future[int]:
        """The future of the update's sequence number, done once it is written (a future,
        not a coroutine: a caller can hand it on without a task)."""
        return self._submit("append", doc_id, bytes(update))

    def sync(self) -> asyncio.Future[None]:
        """A future done once every write (append, compaction, deletion) made before this
        call is durable (fsynced)."""
        syncer = self._syncer
        if self._closed or syncer is None:
            raise RuntimeError("SQLiteStore is not running (call start() first, or it was stopped)")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        syncer.wait(self._made, (loop, future))
        return future

    async def compact(self, doc_id: str, snapshot: bytes, through_seq: int) -> None:
        """Replace the records through ``through_seq`` with ``snapshot``; durable on return."""
        await self._submit("compact", doc_id, bytes(snapshot), through_seq)
        await self.sync()

    async def delete(self, doc_id: str) -> None:
        """Forget the document's records (its seq counter is kept so seqs are never reused);
        durable on return."""
        await self._submit("delete", doc_id)
        await self.sync()

    async def keys(self, prefix: str = "") -> list[str]:
        return cast("list[str]", await self._submit("keys", prefix))

    async def clear_recovered(self, doc_id: str) -> None:
        await self._submit("clear_recovered", doc_id)

    def quick_check(self) -> list[str]:
        """What SQLite's ``quick_check`` finds wrong with the file (empty: nothing), read on
        a connection of its own (blocking: call it in a thread)."""
        with closing(sqlite3.connect(self.path)) as conn:
            try:
                rows = conn.execute("PRAGMA quick_check").fetchall()
            except sqlite3.DatabaseError as exc:
                return [str(exc)]
        problems = [str(row[0]) for row in rows]
        return [] if problems == ["ok"] else problems

    def _submit(
        self, op: _Op, doc_id: str, data: bytes = b"", through_seq: int = 0
    ) -> asyncio.Future[Any]:
        if self._closed or self._queue is None:
            raise RuntimeError("SQLiteStore is not running (call start() first, or it was stopped)")
        if not isinstance(doc_id, str):
            raise TypeError(f"doc_id must be str, not {type(doc_id).__name__}")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        request = _Request(op, doc_id, data, through_seq, loop, fut)
        with self._submitting:  # the syncer counts writes in the order they are queued
            self._queue.put(request)
            if op in _WRITES:
                self._made += 1
        return fut

    # -- writer thread ---------------------------------------------------------------------

    def _run(
        self,
        requests: queue.SimpleQueue[_Request],
        start_loop: asyncio.AbstractEventLoop,
        ready: asyncio.Future[None],
    ) -> None:
        try:
            conn, log_path = self._open()
        except BaseException as exc:
            self._post(start_loop, [(ready, None, exc)])
            return
        syncer: LogSyncer[_SyncWaiter] = LogSyncer(
            log_path,
            window=self.sync_window,
            release=self._synced,
            name=f"collab-sqlite-syncer:{self.path.name}",
            observe=self.observe_sync,
        )
        try:
            syncer.start()
        except BaseException as exc:  # no syncer, no durability: the store does not start
            conn.close()
            self._post(start_loop, [(ready, None, exc)])
            return
        self._syncer = syncer
        self._post(start_loop, [(ready, None, None)])
        stop_req: _Request | None = None
        try:
            carry: _Request | None = None
            while True:
                req = carry if carry is not None else requests.get()
                carry = None
                if req.op == "append":
                    batch = [req]
                    carry = self._collect(requests, batch)
                    started = time.perf_counter()
                    self._write_batch(conn, batch)
                    if self.observe_write is not None:
                        self.observe_write(time.perf_counter() - started)
                    syncer.wrote(len(batch))  # written or failed: either way, done
                    del batch
                elif req.op == "stop":
                    stop_req = req
                    break
                else:
                    self._serve_one(conn, req)
                    if req.op in _WRITES:
                        syncer.wrote(1)
                # while the writer waits for the next request, it holds nothing of the last
                # (a loaded document's records, a snapshot: megabytes, long after they served)
                del req
        finally:
            close_exc: BaseException | None = None
            try:
                syncer.stop()  # every sync handed over is released
                conn.close()
            except BaseException as exc:  # pragma: no cover - close hardly ever fails
                close_exc = exc
            # Anything queued after stop (only possible from another thread) is refused.
            stopped = RuntimeError("SQLiteStore was stopped")
            while True:
                try:
                    late = requests.get_nowait()
                except queue.Empty:
                    break
                self._post(late.loop, [(late.future, None, stopped)])
            if stop_req is not None:
                self._post(stop_req.loop, [(stop_req.future, None, close_exc)])

    def _open(self) -> tuple[sqlite3.Connection, pathlib.Path]:
        """The connection, and the write-ahead log it writes to."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
        try:
            conn.execute("PRAGMA busy_timeout = 5000")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"could not enable WAL mode (got {mode!r})")
            conn.execute("PRAGMA synchronous = NORMAL")  # commits are fsynced by the syncer
            conn.executescript(SCHEMA)
            # the log is next to the file SQLite opened (a symlink resolved, a relative path
            # made absolute)
            database = conn.execute("PRAGMA database_list").fetchone()[2]
        except BaseException:
            conn.close()
            raise
        return conn, pathlib.Path(database + "-wal")

    def _collect(
        self, requests: queue.SimpleQueue[_Request], batch: list[_Request]
    ) -> _Request | None:
        """Add the appends already queued to ``batch`` and, while appends come fast, those
        that arrive until its first append is ``group_window`` old; return a non-append
        met."""
        deadline: float | None = None
        while len(batch) < self.max_batch:
            if not requests.empty():
                req = requests.get_nowait()  # this thread is the only one taking requests
            else:
                if deadline is None:
                    now = time.monotonic()
                    rate = self._append_rate(batch[0].doc_id, now)
                    busy = rate * self.group_window >= _BUSY_PER_WINDOW
                    deadline = batch[0].made + self.group_window if busy else now
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    req = requests.get(timeout=remaining)
                except queue.Empty:
                    break
            if req.op != "append":
                return req
            batch.append(req)
        return None

    def _synced(self, waiters: list[_SyncWaiter], error: BaseException | None) -> None:
        self._post_by_loop([(loop, future, None, error) for loop, future in waiters])

    def _append_rate(self, doc_id: str, now: float) -> float:
        """The document's committed appends per second, averaged with an exponential decay.

        Per document: only appends to one document share a broadcast, so only a document
        that takes appends quickly has them wait for company; across documents a batch is
        whatever is already queued, and a lone edit is written at once, however busy the
        server."""
        rate, at = self._rates.get(doc_id, (0.0, now))
        return rate * math.exp((at - now) / _RATE_HORIZON)

    def _count_appends(self, batch: list[_Request], now: float) -> None:
        counts: dict[str, int] = {}
        for req in batch:
            counts[req.doc_id] = counts.get(req.doc_id, 0) + 1
        rates = self._rates
        for doc_id, count in counts.items():
            rates[doc_id] = (self._append_rate(doc_id, now) + count / _RATE_HORIZON, now)
        if len(rates) > _MAX_KNOWN_SEQS:  # forget the documents that went quiet
            quiet = now - 10 * _RATE_HORIZON
            self._rates = {doc_id: entry for doc_id, entry in rates.items() if entry[1] > quiet}

    @staticmethod
    def _post(
        loop: asyncio.AbstractEventLoop,
        items: list[tuple[asyncio.Future[Any], object, BaseException | None]],
    ) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop has nobody waiting any more
            loop.call_soon_threadsafe(_settle_all, items)

    def _post_many(self, items: list[tuple[_Request, object, BaseException | None]]) -> None:
        self._post_by_loop([(req.loop, req.future, result, exc) for req, result, exc in items])

    @classmethod
    def _post_by_loop(
        cls,
        items: list[
            tuple[asyncio.AbstractEventLoop, asyncio.Future[Any], object, BaseException | None]
        ],
    ) -> None:
        """Settle futures on their own event loops, with one call per loop."""
        loop = items[0][0]
        if all(item[0] is loop for item in items):  # the usual case: one event loop
            cls._post(loop, [(fut, result, exc) for _loop, fut, result, exc in items])
            return
        by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
        for item_loop, fut, result, exc in items:
            by_loop.setdefault(item_loop, []).append((fut, result, exc))
        for item_loop, settled in by_loop.items():
            cls._post(item_loop, settled)

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

    def _write_batch(self, conn: sqlite3.Connection, batch: list[_Request]) -> None:
        known = self._last_seqs
        last: dict[str, int] = {}
        rows: list[tuple[str, int, str, bytes, int]] = []
        seqs: list[int] = []

        def body() -> None:
            for req in batch:
                seq = last.get(req.doc_id)
                if seq is None:
                    seq = known.get(req.doc_id)
                    if seq is None:
                        seq = conn.execute(LAST_SEQ_SQL, (req.doc_id,)).fetchone()[0]
                seq += 1
                last[req.doc_id] = seq
                seqs.append(seq)
                rows.append((req.doc_id, seq, "u", req.data, _crc(req.data)))
            if len(rows) == 1:
                # One statement is its own transaction (and fsync): fewer round trips into
                # SQLite (each one gives up and takes back the GIL).
                conn.execute(_INSERT_SQL, rows[0])
                self.commits += 1
            else:
                self._transaction(conn, lambda: conn.executemany(_INSERT_SQL, rows))

        try:
            body()
        except Exception as exc:
            known.clear()  # read the counters back from the database
            if len(batch) > 1:
                log.warning(
                    "store: batch of %d appends failed (%s); retrying one by one", len(batch), exc
                )
                for req in batch:
                    self._write_batch(conn, [req])
                return
            log.error("store: append to %r failed: %s", batch[0].doc_id, exc)
            self._post_many([(batch[0], None, exc)])
            return
        if len(known) + len(last) > _MAX_KNOWN_SEQS:
            known.clear()
        known.update(last)
        self.appended += len(batch)
        self._count_appends(batch, time.monotonic())
        # Last, so that the writer goes straight back to waiting (and lets go of the GIL)
        # while the event loop wakes up to take the results.
        self._post_many([(req, seq, None) for req, seq in zip(batch, seqs, strict=True)])

    def _serve_one(self, conn: sqlite3.Connection, req: _Request) -> None:
        try:
            if req.op == "load":
                result: object = self._load(conn, req.doc_id)
            elif req.op == "compact":
                result = self._transaction(conn, lambda: self._compact(conn, req))
            elif req.op == "delete":
                self._transaction(conn, lambda: self._delete(conn, req.doc_id))
                result = None
            elif req.op == "keys":
                result = _keys(conn, req.doc_id)
            elif req.op == "clear_recovered":
                self._transaction(
                    conn,
                    lambda: conn.execute("DELETE FROM recovered WHERE doc_id = ?", (req.doc_id,)),
                )
                result = None
            else:  # pragma: no cover - _run dispatches every other op
                raise AssertionError(f"unexpected op {req.op!r}")
        except Exception as exc:
            if not isinstance(exc, ValueError):
                log.error("store: %s of %r failed: %s", req.op, req.doc_id, exc)
            self._post_many([(req, None, exc)])
            return
        self._post_many([(req, result, None)])

    @staticmethod
    def _delete(conn: sqlite3.Connection, doc_id: str) -> None:
        # Appends leave the counter to the records; keep it here before they go.
        last_seq: int = conn.execute(LAST_SEQ_SQL, (doc_id,)).fetchone()[0]
        if last_seq:
            conn.execute(SET_LAST_SEQ_SQL, (doc_id, last_seq))
        conn.execute("DELETE FROM records WHERE doc_id = ?", (doc_id,))

    @staticmethod
    def _compact(conn: sqlite3.Connection, req: _Request) -> None:
        doc_id, through_seq = req.doc_id, req.through_seq
        last_seq: int = conn.execute(LAST_SEQ_SQL, (doc_id,)).fetchone()[0]
        snapshot_seq: int | None = conn.execute(
            "SELECT MAX(seq) FROM records WHERE doc_id = ? AND kind = 's'", (doc_id,)
        ).fetchone()[0]
        _check_compact(doc_id, through_seq, last_seq, snapshot_seq)
        conn.execute("DELETE FROM records WHERE doc_id = ? AND seq <= ?", (doc_id, through_seq))
        conn.execute(_INSERT_SQL, (doc_id, through_seq, "s", req.data, _crc(req.data)))
        conn.execute(SET_LAST_SEQ_SQL, (doc_id, max(last_seq, through_seq)))

    @staticmethod
    def _load(conn: sqlite3.Connection, doc_id: str) -> StoredDoc | None:
        rows = conn.execute(_LOAD_SQL, (doc_id,)).fetchall()
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


def _check_compact(doc_id: str, through_seq: int, last_seq: int, snapshot_seq: int | None) -> None:
    """Reject a compaction past the last appended update or behind the current snapshot."""
    if through_seq < 0:
        raise ValueError(f"compact({doc_id!r}): through_seq {through_seq} is negative")
    if through_seq > last_seq:
        raise ValueError(
            f"compact({doc_id!r}): through_seq {through_seq} is past the last seq {last_seq}"
        )
    if snapshot_seq is not None and through_seq < snapshot_seq:
        raise ValueError(
            f"compact({doc_id!r}): through_seq {through_seq} is behind the current "
            f"snapshot at seq {snapshot_seq}"
        )
