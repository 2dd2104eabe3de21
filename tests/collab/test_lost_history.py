"""A store that silently went back to an older state (a damaged or truncated write-ahead log
after a crash) must not have its older text committed over edits its branch already holds:
the document's commits are held, with a warning, until a client that holds the lost history
sends it back. A continuous commit waits until the text it takes is durable in the store."""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

import aiohttp
import pytest
from dulwich.repo import Repo
from gitcli import git, show, until
from servers import make_config
from test_quarantine import _health
from yjsclient import YjsPeer

from collab import Client, CollabServer
from collab.git.branch_sync import CLEAN_SHUTDOWN
from collab.store.memory_store import MemoryStore

ROOM = "demo/main:README.md"
STORE_FILES = ("store.sqlite3", "store.sqlite3-wal", "store.sqlite3-shm")


def _rewind_store(data: Path, older: Path) -> None:
    """Put back the store files saved in ``older``: what SQLite reads after it drops the
    frames of a damaged log (silently)."""
    for name in STORE_FILES:
        (data / name).unlink(missing_ok=True)
        if (older / name).exists():
            shutil.copy2(older / name, data / name)


@pytest.mark.parametrize("crashed", [True, False], ids=["recovery-at-start", "clean-start"])
async def test_a_store_gone_back_to_an_older_state_is_not_committed_over_its_branch(
    repos: Path, tmp_path: Path, crashed: bool, caplog: pytest.LogCaptureFixture
) -> None:
    demo = repos / "demo"
    data = tmp_path / "data"
    config = make_config(repos, data, commit_idle=0.05)
    async with CollabServer(config) as server, Client(server.url, user="ann") as ann:
        doc = await ann.open(ROOM)
        doc.insert(0, "<first>\n")
        await ann.flush()
        await until(lambda: show(demo, "main", "README.md") == str(doc))
    older = tmp_path / "older"
    older.mkdir()
    for name in STORE_FILES:
        if (data / name).exists():
            shutil.copy2(data / name, older / name)

    async with CollabServer(config) as server, Client(server.url, user="ann") as ann:
        doc = await ann.open(ROOM)
        doc.insert(len(str(doc)), "<second>\n")
        await ann.flush()
        committed = str(doc)
        await until(lambda: show(demo, "main", "README.md") == committed)
        old_history = doc.doc.get_update()
    head = git(demo, "rev-parse", "main").strip()

    _rewind_store(data, older)
    if crashed:
        (data / CLEAN_SHUTDOWN).unlink()  # the next start runs the recovery scan
    else:
        assert (data / CLEAN_SHUTDOWN).exists()

    caplog.set_level(logging.WARNING, logger="collab.rooms")
    async with CollabServer(config) as server:
        base = server.url.replace("ws://", "http://")
        assert git(demo, "rev-parse", "main").strip() == head  # the recovery held it
        async with Client(server.url, user="bob") as bob:
            bob_doc = await bob.open(ROOM)
            assert "<second>" not in str(bob_doc)  # what the store went back to
            warned = [r.getMessage() for r in caplog.records if ROOM in r.getMessage()]
            assert any("lacks edits its branch already committed" in m for m in warned)
            assert server.rooms.history_lost == 1
            async with aiohttp.ClientSession() as http, http.get(base + "/metrics") as resp:
                assert "collab_rooms_history_lost_total 1.0" in await resp.text()

            bob_doc.insert(0, "<bob>\n")
            await bob.flush()
            await server.git.branches[("demo", "main")].flush()
            assert ROOM in (await _health(base))["held"]  # its commit is held...
            assert git(demo, "rev-parse", "main").strip() == head  # ...and nothing committed

            # a client that holds the whole history reconnects: the document is whole again
            peer = YjsPeer(server.url, ROOM, user="ann")
            peer.doc.apply_update(old_history)
            async with peer:
                await peer.wait_text(lambda text: "<bob>" in text)
                await until(lambda: show(demo, "main", "README.md") == "<bob>\n" + committed)
            assert (await _health(base))["held"] == {}
            assert str(bob_doc) == "<bob>\n" + committed
    # every commit since keeps what the branch had committed: no older text went in
    for commit in git(demo, "rev-list", f"{head}..main").split():
        assert "<second>" in git(demo, "show", f"{commit}:README.md")
    git(demo, "fsck", "--full", "--strict")


class _SlowDisk(MemoryStore):
    """A store whose fsyncs complete only when the test says so, one by one."""

    def __init__(self) -> None:
        super().__init__()
        self.hold = False
        self.pending: list[asyncio.Future[None]] = []

    def sync(self) -> asyncio.Future[None]:
        if not self.hold:
            return super().sync()
        waiting: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending.append(waiting)
        return waiting

    def release(self, count: int | None = None) -> None:
        ready = self.pending if count is None else self.pending[:count]
        self.pending = [] if count is None else self.pending[count:]
        for waiting in ready:
            waiting.set_result(None)


async def test_a_continuous_commit_waits_until_the_text_it_takes_is_durable(
    repos: Path, tmp_path: Path
) -> None:
    demo = repos / "demo"
    store = _SlowDisk()
    config = make_config(
        repos, tmp_path / "data", store="memory", commit_idle=30.0, commit_max_lag=60.0
    )  # only the flush below commits
    async with CollabServer(config, store=store) as server, Client(server.url, user="ann") as ann:
        doc = await ann.open(ROOM)
        room = server.rooms.get_key(ROOM)
        assert room is not None
        sync = server.git.branches[("demo", "main")]
        head = git(demo, "rev-parse", "main").strip()
        store.hold = True
        try:
            doc.insert(0, "<one>")
            await until(lambda: "<one>" in str(room.text) and len(store.pending) == 1)
            flush = asyncio.create_task(sync.flush())
            await asyncio.sleep(0.05)  # the flush waits for <one> to be durable
            doc.insert(0, "<two>")
            await until(lambda: "<two>" in str(room.text) and len(store.pending) == 2)
            store.release(1)  # <one> is durable; <two> is written, not durable yet
            await asyncio.sleep(0.3)
            assert "<two>" not in show(demo, "main", "README.md")
            assert git(demo, "rev-parse", "main").strip() == head
        finally:  # (a stop waits for every fsync)
            store.hold = False
            store.release()
        await asyncio.wait_for(flush, 10)
        assert show(demo, "main", "README.md") == str(room.text)
        assert show(demo, "main", "README.md").startswith("<two><one>")
    git(demo, "fsck", "--full", "--strict")


async def test_a_deleted_branch_leaves_no_record_and_its_name_made_again_commits(
    repos: Path, tmp_path: Path
) -> None:
    demo = repos / "demo"
    records = Path(Repo(str(demo)).controldir(), "collab", "synced-state")
    config = make_config(repos, tmp_path / "data", commit_idle=0.05)
    async with CollabServer(config) as server, Client(server.url, user="ann") as ann:
        await ann.fork("demo", "main", "topic")
        doc = await ann.open("demo/topic:README.md")
        doc.insert(0, "<first life>\n" * 5)
        await ann.flush()
        await until(lambda: show(demo, "topic", "README.md") == str(doc))
        assert len(list(records.iterdir())) == 1
        await doc.close()
        await until(lambda: not any(r.attached for r in server.rooms.loaded("demo/topic:")))
        await ann.call("branch.delete", repo="demo", name="topic")
        assert not list(records.iterdir())
        await ann.fork("demo", "main", "topic")
        again = await ann.open("demo/topic:README.md")
        again.insert(0, "<second life>\n")
        await ann.flush()
        await until(lambda: show(demo, "topic", "README.md") == str(again))
