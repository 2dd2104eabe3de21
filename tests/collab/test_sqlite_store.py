"""Tests specific to ``SQLiteStore``: durability, group commit, corruption, crashes."""

from __future__ import annotations

import asyncio
import logging
import os
import pathlib
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import zlib
from contextlib import closing

import pytest

import collab.store.log_syncer
from collab.store import sqlite_store
from collab.store.base import StoredDoc
from collab.store.sqlite_store import SQLiteStore

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def db_path(tmp_path: pathlib.Path) -> pathlib.Path:
    return tmp_path / "nested" / "dir" / "collab.db"


def execute(path: pathlib.Path, sql: str, params: tuple[object, ...] = ()) -> None:
    """Run one statement through a separate connection, as an outside party would."""
    with closing(sqlite3.connect(path)) as conn:
        conn.execute(sql, params)
        conn.commit()


async def test_start_creates_file_in_wal_mode(tmp_path: pathlib.Path) -> None:
    path = db_path(tmp_path)
    async with SQLiteStore(path):
        assert path.exists()
        with closing(sqlite3.connect(path)) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_durable_across_stop_and_start(tmp_path: pathlib.Path) -> None:
    path = db_path(tmp_path)
    async with SQLiteStore(path) as store:
        a = [await store.append("a", b"a%d" % i) for i in range(5)]
        b = await store.append("b", b"b0")
        await store.compact("a", b"snap-a", a[2])
        await store.append("deleted", b"x")
        await store.delete("deleted")

    async with SQLiteStore(path) as store:
        stored = await store.load("a")
        assert stored == StoredDoc(b"snap-a", a[2], [(a[3], b"a3"), (a[4], b"a4")])
        assert await store.load("b") == StoredDoc(None, 0, [(b, b"b0")])
        assert await store.load("deleted") is None
        # Seq counters survive the restart (and the delete).
        assert await store.append("a", b"a5") == a[4] + 1
        assert await store.append("b", b"b1") == b + 1
        assert await store.append("deleted", b"y") == 2


async def test_stop_flushes_pending_appends(tmp_path: pathlib.Path) -> None:
    path = db_path(tmp_path)
    store = SQLiteStore(path, group_window=0.05)
    await store.start()
    tasks = [asyncio.ensure_future(store.append("doc", b"u%d" % i)) for i in range(100)]
    await asyncio.sleep(0)  # one loop turn: every task has enqueued its append
    await store.stop()
    seqs = [t.result() for t in tasks]  # all done, none failed
    assert seqs == list(range(1, 101))
    async with SQLiteStore(path) as reopened:
        stored = await reopened.load("doc")
        assert stored is not None
        assert [s for s, _ in stored.updates] == seqs


async def test_group_commit_batches_concurrent_appends(tmp_path: pathlib.Path) -> None:
    async with SQLiteStore(db_path(tmp_path), group_window=0.005) as store:
        seqs = await asyncio.gather(
            *(store.append(f"doc-{i % 10}", b"u%d" % i) for i in range(500))
        )
        assert store.appended == 500
        assert store.commits < store.appended / 5, store.commits
        for d in range(10):
            assert seqs[d::10] == list(range(1, 51))


class _Disk:
    """Stands in for ``os.fdatasync`` of the store's syncer: counts the fsyncs of the log,
    stalls them while ``stalled`` is clear, or fails them with ``error``."""

    def __init__(self) -> None:
        self.stalled = threading.Event()
        self.stalled.set()
        self.entered = threading.Event()
        self.error: OSError | None = None
        self.calls = 0
        self._real = os.fdatasync

    def __call__(self, fd: int) -> None:
        self.calls += 1
        self.entered.set()
        if not self.stalled.wait(10):
            raise AssertionError("the test never released the disk")
        if self.error is not None:
            raise self.error
        self._real(fd)


@pytest.fixture
def disk(monkeypatch: pytest.MonkeyPatch) -> _Disk:
    fake = _Disk()
    monkeypatch.setattr(collab.store.log_syncer.os, "fdatasync", fake)
    return fake


async def test_an_append_is_done_while_the_disk_stalls_and_its_sync_waits(
    tmp_path: pathlib.Path, disk: _Disk
) -> None:
    async with SQLiteStore(db_path(tmp_path)) as store:
        assert await store.append("doc", b"u1") == 1
        disk.stalled.clear()
        first_sync = store.sync()
        await asyncio.to_thread(disk.entered.wait, 5)  # the fsync is under way, and stuck
        seqs = await asyncio.wait_for(
            asyncio.gather(*(store.append("doc", b"u%d" % i) for i in range(2, 12))), 5
        )
        assert seqs == list(range(2, 12))
        stored = await store.load("doc")  # written: every later load has it
        assert stored is not None and len(stored.updates) == 11
        later_sync = store.sync()
        await asyncio.sleep(0.05)
        assert not first_sync.done() and not later_sync.done()
        disk.stalled.set()
        await asyncio.wait_for(asyncio.gather(first_sync, later_sync), 5)
        assert store.syncs == 2  # the later sync waited for an fsync of its own


async def test_syncs_under_load_share_fsyncs(tmp_path: pathlib.Path, disk: _Disk) -> None:
    async with SQLiteStore(db_path(tmp_path), sync_window=0.02) as store:
        started = time.monotonic()

        async def write_then_sync(i: int) -> None:
            await store.append(f"doc-{i % 4}", b"u%d" % i)
            await store.sync()

        await asyncio.gather(*(write_then_sync(i) for i in range(200)))
        assert store.appended == 200
        assert 1 <= store.syncs == disk.calls <= 20, store.syncs
        if store.syncs > 1:  # fsyncs start a window apart
            assert time.monotonic() - started >= 0.02 * (store.syncs - 1)


async def test_a_failed_fsync_fails_that_sync_and_every_later_one(
    tmp_path: pathlib.Path, disk: _Disk, caplog: pytest.LogCaptureFixture
) -> None:
    async with SQLiteStore(db_path(tmp_path)) as store:
        await store.append("doc", b"u1")
        disk.error = OSError(5, "Input/output error")
        with caplog.at_level(logging.ERROR, logger="collab.store"), pytest.raises(OSError):
            await store.sync()
        assert any("fsync" in r.getMessage() for r in caplog.records)
        disk.error = None  # the kernel may have dropped the pages: no later sync succeeds
        assert await store.append("doc", b"u2") == 2
        with pytest.raises(OSError, match="Input/output"):
            await store.sync()


async def test_a_symlinked_database_has_its_log_synced(tmp_path: pathlib.Path, disk: _Disk) -> None:
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.mkdir()
    (link / "collab.db").symlink_to(real / "collab.db")  # the log is written next to the target
    async with SQLiteStore(link / "collab.db") as store:
        await store.append("doc", b"u1")
        await store.sync()
        assert store.syncs == disk.calls == 1
        assert (real / "collab.db-wal").exists() and not (link / "collab.db-wal").exists()


@pytest.mark.parametrize("op", ["compact", "delete"])
async def test_compactions_and_deletions_are_durable_on_return(
    tmp_path: pathlib.Path, disk: _Disk, op: str
) -> None:
    async with SQLiteStore(db_path(tmp_path)) as store:
        await store.append("doc", b"u1")
        await store.sync()
        disk.stalled.clear()
        if op == "compact":
            done = asyncio.ensure_future(store.compact("doc", b"snapshot", 1))
        else:
            done = asyncio.ensure_future(store.delete("doc"))
        await asyncio.sleep(0.1)
        assert not done.done()  # written, waiting for its fsync
        disk.stalled.set()
        await asyncio.wait_for(done, 5)
        assert store.syncs == 2


async def test_stop_releases_the_syncs_it_was_handed(tmp_path: pathlib.Path) -> None:
    store = SQLiteStore(db_path(tmp_path), sync_window=10.0)
    await store.start()
    appended = store.append("doc", b"u1")
    synced = store.sync()
    await appended
    await asyncio.wait_for(store.stop(), 5)  # the window does not hold the stop
    assert synced.done() and synced.exception() is None
    assert store.syncs == 1


async def test_max_batch_bounds_a_commit(tmp_path: pathlib.Path) -> None:
    async with SQLiteStore(db_path(tmp_path), group_window=0.005, max_batch=10) as store:
        await asyncio.gather(*(store.append("doc", b"u%d" % i) for i in range(100)))
        assert store.appended == 100
        assert store.commits >= 10


@pytest.mark.parametrize(
    ("sql", "params", "reason_part"),
    [
        (
            "UPDATE records SET data = ? WHERE doc_id = 'doc' AND seq = 5",
            (b"u4-flipped",),
            "checksum",
        ),
        ("UPDATE records SET crc = crc + 1 WHERE doc_id = 'doc' AND seq = 5", (), "checksum"),
        ("UPDATE records SET data = NULL WHERE doc_id = 'doc' AND seq = 5", (), "NULL"),
        (
            "UPDATE records SET data = substr(data, 1, 1) WHERE doc_id = 'doc' AND seq = 5",
            (),
            "checksum",
        ),
    ],
    ids=["data", "crc", "null", "truncated"],
)
async def test_corrupt_tail_is_detected_and_reported(
    tmp_path: pathlib.Path,
    caplog: pytest.LogCaptureFixture,
    sql: str,
    params: tuple[object, ...],
    reason_part: str,
) -> None:
    path = db_path(tmp_path)
    async with SQLiteStore(path) as store:
        seqs = [await store.append("doc", b"u%d" % i) for i in range(5)]
        await store.append("other", b"fine")
    assert seqs == [1, 2, 3, 4, 5]
    execute(path, sql, params)

    with caplog.at_level(logging.WARNING, logger="collab.store"):
        async with SQLiteStore(path) as store:
            stored = await store.load("doc")
            assert stored is not None
            assert stored.updates == [(s, b"u%d" % (s - 1)) for s in seqs[:4]]
            assert stored.corrupt is not None
            assert (stored.corrupt.doc_id, stored.corrupt.seq) == ("doc", 5)
            assert reason_part in stored.corrupt.reason
            other = await store.load("other")
            assert other is not None and other.corrupt is None
    assert any("corrupt" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)


async def test_corruption_in_the_middle_hides_everything_after(tmp_path: pathlib.Path) -> None:
    path = db_path(tmp_path)
    async with SQLiteStore(path) as store:
        for i in range(6):
            await store.append("doc", b"u%d" % i)
    execute(path, "UPDATE records SET crc = 0 WHERE doc_id = 'doc' AND seq = 3")
    async with SQLiteStore(path) as store:
        stored = await store.load("doc")
        assert stored is not None
        assert [s for s, _ in stored.updates] == [1, 2]
        assert stored.corrupt is not None and stored.corrupt.seq == 3


async def test_corrupt_snapshot_is_dropped_and_reported(tmp_path: pathlib.Path) -> None:
    path = db_path(tmp_path)
    async with SQLiteStore(path) as store:
        for i in range(4):
            await store.append("doc", b"u%d" % i)
        await store.compact("doc", b"snapshot", 3)
    snapshot_crc = zlib.crc32(b"snapshot")
    execute(path, "UPDATE records SET data = ? WHERE doc_id = 'doc' AND seq = 3", (b"snapshoT",))
    async with SQLiteStore(path) as store:
        stored = await store.load("doc")
        assert stored is not None
        assert (stored.snapshot, stored.snapshot_seq, stored.updates) == (None, 0, [])
        assert stored.corrupt is not None and stored.corrupt.seq == 3
        # Re-snapshotting at the same seq repairs the document.
        await store.compact("doc", b"snapshot", 3)
        repaired = await store.load("doc")
        assert repaired == StoredDoc(b"snapshot", 3, [(4, b"u3")])
    with closing(sqlite3.connect(path)) as conn:
        row = conn.execute("SELECT crc FROM records WHERE doc_id = 'doc' AND seq = 3").fetchone()
        assert row == (snapshot_crc,)


async def test_the_authors_of_a_branch_outlive_a_restart_until_their_commit_is_settled(
    tmp_path: pathlib.Path,
) -> None:
    """Who wrote is written with the records, and forgotten only once a commit naming them
    has landed: what a crash leaves uncommitted, also after a take whose commit never
    landed, is committed as its typists' at the next start."""
    path = db_path(tmp_path)
    async with SQLiteStore(path, group_window=0.005) as store:
        await asyncio.gather(
            store.append("repo/main:a.txt", b"1", author="ann"),
            store.append("repo/main:a.txt", b"2", author="bob"),
            store.append("repo/main:b.txt", b"3", author="ann"),
        )
        await store.append("repo/main:a.txt", b"4", author="ann")
        assert await store.take_authors("repo/main") == ["ann", "bob"]  # (no commit landed)
    async with SQLiteStore(path) as store:
        taken = await store.take_authors("repo/main")
        assert taken == ["ann", "bob"]
        await store.settle_authors("repo/main", taken)
        await store.append("repo/main:a.txt", b"5", author="cid")
    async with SQLiteStore(path) as store:
        assert await store.take_authors("repo/main") == ["cid"]


async def test_sqlite_error_fails_only_affected_appends(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = db_path(tmp_path)
    async with SQLiteStore(path, group_window=0.005) as store:
        assert await store.append("good", b"g1") == 1
        execute(
            path,
            "CREATE TRIGGER reject_bad BEFORE INSERT ON records WHEN NEW.doc_id = 'bad' "
            "BEGIN SELECT RAISE(ABORT, 'rejected by test'); END",
        )
        with caplog.at_level(logging.ERROR, logger="collab.store"):
            results = await asyncio.gather(
                store.append("good", b"g2"),
                store.append("bad", b"b1"),
                store.append("good", b"g3"),
                return_exceptions=True,
            )
        assert results[0] == 2
        assert isinstance(results[1], sqlite3.IntegrityError)
        assert "rejected by test" in str(results[1])
        assert results[2] == 3
        assert any("bad" in r.getMessage() for r in caplog.records)

        execute(path, "DROP TRIGGER reject_bad")
        assert await store.append("bad", b"b2") == 1  # the failed append used no seq
        good = await store.load("good")
        assert good is not None
        assert good.updates == [(1, b"g1"), (2, b"g2"), (3, b"g3")]


async def test_start_failure_is_raised(tmp_path: pathlib.Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    store = SQLiteStore(blocker / "collab.db")  # parent is a file: cannot create
    with pytest.raises(OSError):
        await store.start()
    with pytest.raises(RuntimeError):
        await store.append("doc", b"u")
    await store.stop()  # harmless


CHILD = """
import asyncio, os, pathlib, signal, sys
from collab.store.sqlite_store import SQLiteStore

async def main() -> None:
    store = SQLiteStore(pathlib.Path(sys.argv[1]), group_window=0.001, max_batch=8)
    await store.start()
    kill_after = int(sys.argv[2])
    done = 0

    async def worker(w: int) -> None:
        nonlocal done
        for k in range(1000):
            data = b"w%d-%d" % (w, k)
            seq = await store.append("doc", data)
            print(seq, data.decode(), flush=True)
            done += 1
            if done == kill_after:
                os.kill(os.getpid(), signal.SIGKILL)

    await asyncio.gather(*(worker(w) for w in range(16)))

asyncio.run(main())
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
async def test_every_acknowledged_append_survives_a_crash(tmp_path: pathlib.Path) -> None:
    path = db_path(tmp_path)
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])
    )
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), "300"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        env=env,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    acknowledged: dict[int, bytes] = {}
    for line in proc.stdout.splitlines():
        seq_text, data_text = line.split()
        acknowledged[int(seq_text)] = data_text.encode()
    assert len(acknowledged) == 300

    async with SQLiteStore(path) as store:
        stored = await store.load("doc")
        assert stored is not None
        assert stored.corrupt is None
        found = dict(stored.updates)
        # Every acknowledged append is there, with its data.
        assert {seq: found.get(seq) for seq in acknowledged} == acknowledged
        # What is there is a gap-free prefix, and each worker's appends are in order.
        assert sorted(found) == list(range(1, len(found) + 1))
        last_k: dict[str, int] = {}
        for _, update in stored.updates:
            w, k = update.decode().split("-")
            assert int(k) == last_k.get(w, -1) + 1
            last_k[w] = int(k)
        assert await store.append("doc", b"after-crash") == len(found) + 1


def _next_char(ch: str) -> str:
    code = ord(ch) + 1
    return chr(0xE000 if 0xD800 <= code <= 0xDFFF else code)


@pytest.mark.parametrize("prefix", ["demo/main:", "demo/people/é-1:", "x\ud7ff", "x\U0010ffff"])
async def test_keys_read_a_range_of_the_primary_key(tmp_path: pathlib.Path, prefix: str) -> None:
    # a scan of every record would hold up every room's appends on the writer thread
    path = db_path(tmp_path)
    inside = [prefix + "a", prefix + "b/c", prefix + "\U0010ffff"]
    outside = [prefix[:-1], prefix[:-1] + chr(ord(prefix[-1]) - 1) + "z"]
    if ord(prefix[-1]) < 0x10FFFF:
        outside.append(prefix[:-1] + _next_char(prefix[-1]))
    async with SQLiteStore(path) as store:
        for key in inside + outside:
            await store.append(key, b"u")
        assert await store.keys(prefix) == sorted(inside)
    with closing(sqlite3.connect(path)) as conn:
        seen: list[str] = []
        conn.set_trace_callback(seen.append)
        assert sqlite_store._keys(conn, prefix) == sorted(inside)
        conn.set_trace_callback(None)
        plans = [row[3] for sql in seen for row in conn.execute("EXPLAIN QUERY PLAN " + sql)]
    if ord(prefix[-1]) < 0x10FFFF:  # the last code point has no successor: a scan, then
        assert plans and all("SEARCH records USING PRIMARY KEY" in plan for plan in plans), plans


async def test_a_syncer_that_cannot_start_fails_the_start_instead_of_hanging(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(self: object) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(collab.store.log_syncer.LogSyncer, "start", refuse)
    store = SQLiteStore(db_path(tmp_path))
    with pytest.raises(RuntimeError, match="new thread"):
        async with asyncio.timeout(5):
            await store.start()
    monkeypatch.undo()
    async with store:  # and it can be started once threads can be
        assert await store.append("doc", b"u") == 1


async def test_the_syncer_checkpoints_the_log_and_keeps_it_bounded(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the event loop's commits never checkpoint (a checkpoint fsyncs); the syncer does, and
    # under writes that never pause it truncates the log once it is large
    monkeypatch.setattr(collab.store.sqlite_store, "_CHECKPOINT_EVERY", 0.0)
    monkeypatch.setattr(collab.store.sqlite_store, "_LOG_LIMIT", 3_000_000)
    path = db_path(tmp_path)
    log = pathlib.Path(f"{path}-wal")
    async with SQLiteStore(path) as store:
        largest = 0
        for i in range(120):
            await store.append(f"doc-{i % 4}", os.urandom(100_000))
            await store.sync()  # the next append races the checkpoint that follows the fsync
            largest = max(largest, log.stat().st_size)
        assert path.stat().st_size >= 10_000_000  # the pages were copied into the file
        assert largest <= 3_000_000 + 2 * 200_000, largest
        stored = await store.load("doc-0")
        assert stored is not None and len(stored.updates) == 30
