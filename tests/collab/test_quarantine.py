"""Damaged stored history: the document is quarantined, never served whole nor committed;
``collab store repair`` keeps every intact record; a shrinking commit after it is held."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import aiohttp
import pytest
from gitcli import git, head_file, show, until
from serverproc import ServerProcess
from servers import make_config
from storedamage import flip_record, stored_rows
from test_crash import stored_text
from test_git_crash import _fail_final_commits
from yjsclient import YjsPeer

from collab import Client, ClientError, CollabServer
from collab.store.data_lock import DataDirBusy, DataDirLock
from collab.store.memory_store import MemoryStore
from protocol.errors import ErrorCode

ROOM = "demo/main:README.md"


def _head(repos: Path) -> tuple[str, str]:
    return head_file(repos / "demo", "README.md")


def _fsck(repos: Path) -> None:
    subprocess.run(["git", "-C", str(repos / "demo"), "fsck", "--full", "--strict"], check=True)


def _store_cli(action: str, data_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "collab", "store", action, "--data-dir", str(data_dir), *extra],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def _health(base: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(base + "/healthz") as resp:
        return dict(await resp.json())


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "data"


async def test_a_damaged_snapshot_is_quarantined_and_repaired_from_the_branch(
    repos: Path, data_dir: Path
) -> None:
    config = make_config(repos, data_dir, commit_idle=0.05)
    async with CollabServer(config) as first, Client(first.url, user="ann") as ann:
        doc = await ann.open(ROOM)
        doc.insert(len(str(doc)), "a line typed live\n" * 40)
        await ann.flush()
        typed = str(doc)
    # the clean stop committed the text and snapshotted the history
    assert _head(repos)[1] == typed
    snapshots = [seq for seq, kind in stored_rows(data_dir, ROOM) if kind == "s"]
    assert snapshots
    flip_record(data_dir, ROOM, snapshots[0])

    async with CollabServer(config) as second:
        base = second.url.replace("ws://", "http://")
        async with Client(second.url, user="bob") as bob:
            with pytest.raises(ClientError) as refused:
                await bob.open(ROOM)
            assert refused.value.code == ErrorCode.DAMAGED
            other = await bob.open("demo/main:src/app.py")  # the rest is served
            other.insert(0, "# still fine\n")
            await bob.flush()
        async with YjsPeer(second.url, ROOM, user="carl") as carl:
            await asyncio.wait_for(carl.closed.wait(), 5)
            assert carl.close_code == ErrorCode.DAMAGED
        health = await _health(base)
        assert "record" in health["damaged"][ROOM] and "checksum" in health["damaged"][ROOM]
        await second.git.branches[("demo", "main")].flush()
        assert _head(repos)[1] == typed  # the branch keeps its last good commit

    checked = _store_cli("check", data_dir)
    assert checked.returncode == 1, checked
    assert ROOM in checked.stdout and "damaged" in checked.stdout
    repaired = _store_cli("repair", data_dir)
    assert repaired.returncode == 0, repaired
    assert "seeded again" in repaired.stdout
    assert [seq for seq, _kind in stored_rows(data_dir, ROOM, "quarantine")] == snapshots[:1]

    async with CollabServer(config) as third, Client(third.url, user="ann") as ann:
        events: list[dict[str, Any]] = []
        third.events.subscribe("demo", lambda _repo, event: events.append(event))
        assert str(await ann.open(ROOM)) == typed  # seeded again from the branch head
        assert [e for e in events if e["kind"] == "reseeded"] == [
            {"kind": "reseeded", "branch": "main", "path": "README.md", "blob": ANY}
        ]
    assert _head(repos)[1] == typed
    _fsck(repos)


async def test_a_document_that_cannot_load_keeps_no_other_from_a_move_of_its_branch(
    repos: Path, data_dir: Path, tmp_path: Path
) -> None:
    """A push changes a quarantined document's file and another's: the move used to stop at
    the one that cannot load, and with it every open of a document of the branch (each
    first brings the branch up to date). The others take it; the one that could not stays
    quarantined for as long as the server runs (its text lacks the move: served, its next
    commit would undo it), and the branch's commits go on."""
    app = "demo/main:src/app.py"
    config = make_config(repos, data_dir, commit_idle=0.05)
    async with CollabServer(config) as first, Client(first.url, user="ann") as ann:
        for room in (ROOM, app):
            doc = await ann.open(room)
            doc.insert(0, "a line typed live\n" * 40)
        await ann.flush()
    snapshots = [seq for seq, kind in stored_rows(data_dir, ROOM) if kind == "s"]
    assert snapshots
    flip_record(data_dir, ROOM, snapshots[0])
    demo = repos / "demo"
    work = tmp_path / "work"
    subprocess.run(["git", "clone", "-q", str(demo), str(work)], check=True)
    for path in ("README.md", "src/app.py"):
        (work / path).write_text("pushed\n" + (work / path).read_text())
    git(work, "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-qam", "outside")
    git(demo, "config", "receive.denyCurrentBranch", "ignore")
    git(work, "push", "-q", "origin", "main")
    pushed_readme = show(demo, "main", "README.md")

    async with CollabServer(config) as second, Client(second.url, user="bob") as bob:
        other = await asyncio.wait_for(bob.open(app), 10)
        assert str(other).startswith("pushed\na line typed live\n")
        with pytest.raises(ClientError) as refused:
            await bob.open(ROOM)
        assert refused.value.code == ErrorCode.DAMAGED
        health = await _health(second.url.replace("ws://", "http://"))
        assert "not merged" in health["damaged"][ROOM]
        other.insert(0, "bob\n")
        await bob.flush()
        await until(lambda: show(demo, "main", "src/app.py") == str(other))
        assert show(demo, "main", "README.md") == pushed_readme  # not undone


async def test_a_document_the_store_lost_whole_is_seeded_again_out_loud(
    repos: Path, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A store that went back to an older copy, from before a document was first opened,
    holds nothing of it; its branch committed edits of it. The document is seeded again
    from the branch head, which holds them, but not silently: a warning, a ``reseeded``
    event, and the count of documents whose history was lost."""
    config = make_config(repos, data_dir, commit_idle=0.05)
    async with CollabServer(config) as first, Client(first.url, user="ann") as ann:
        doc = await ann.open(ROOM)
        doc.insert(0, "committed before the store went back\n")
        await ann.flush()
        typed = str(doc)
    assert _head(repos)[1] == typed
    with sqlite3.connect(data_dir / "store.sqlite3") as db:
        db.execute("DELETE FROM records WHERE doc_id = ?", (ROOM,))
        db.execute("DELETE FROM docs WHERE doc_id = ?", (ROOM,))
    db.close()

    async with CollabServer(config) as second, Client(second.url, user="bob") as bob:
        events: list[dict[str, Any]] = []
        second.events.subscribe("demo", lambda _repo, event: events.append(event))
        assert str(await bob.open(ROOM)) == typed
        assert [e for e in events if e["kind"] == "reseeded"] == [
            {"kind": "reseeded", "branch": "main", "path": "README.md", "blob": ANY}
        ]
        assert second.rooms.history_lost == 1
        assert "stored history was lost" in caplog.text
        # a document never edited live is seeded as ever, quietly
        await bob.open("demo/main:src/app.py")
        assert second.rooms.history_lost == 1
    assert _head(repos)[1] == typed


async def test_one_process_per_data_directory(repos: Path, data_dir: Path) -> None:
    config = make_config(repos, data_dir)
    async with CollabServer(config):
        with pytest.raises(DataDirBusy):
            DataDirLock(data_dir).acquire()
        second = CollabServer(make_config(repos, data_dir))
        with pytest.raises(DataDirBusy, match="in use by another collab process") as taken:
            await second.start()
        assert "give this one another --data-dir" in str(taken.value)
        other = CollabServer(make_config(repos, data_dir.parent / "other-data"))
        with pytest.raises(DataDirBusy, match="one server at a time serves a --repos"):
            await other.start()
        busy = _store_cli("repair", data_dir)
        assert busy.returncode == 2 and "in use" in busy.stderr
        assert "repaired while no server uses it" in busy.stderr
    with DataDirLock(data_dir):  # released on stop
        pass


async def _type_keystrokes(doc: Any, text: str) -> None:
    for ch in text:
        doc.insert(len(str(doc)), ch)
        await asyncio.sleep(0)


async def test_a_damaged_record_mid_log_is_salvaged_and_the_shrinking_commit_held(
    repos: Path, tmp_path: Path
) -> None:
    server = ServerProcess(repos, tmp_path / "data", extra_args=("--commit-idle", "0.05"))
    data = server.data_dir
    await server.start()
    ann = Client(server.url, user="ann", min_backoff=0.05, max_backoff=0.3)
    try:
        await ann.connect()
        doc = await ann.open(ROOM)
        await _type_keystrokes(doc, "".join(f"line {i} typed key by key\n" for i in range(20)))
        await ann.flush()
        typed = str(doc)
        async with asyncio.timeout(10):  # committed by the continuous commit
            while _head(repos)[1] != typed:
                await asyncio.sleep(0.05)
        full_state = doc.doc.get_update()
        await server.kill()
        seqs = [seq for seq, kind in stored_rows(data, ROOM) if kind == "u"]
        assert len(seqs) > 200
        middle = seqs[len(seqs) // 4]  # what is left is under half the file: drastic
        flip_record(data, ROOM, middle)
        head = _head(repos)

        await server.start()  # the start-up recovery must not commit the truncated text
        base = server.url.replace("ws://", "http://")
        async with asyncio.timeout(10):
            while ROOM not in (await _health(base))["damaged"]:
                await asyncio.sleep(0.05)  # ann's client reconnects and is refused
        await asyncio.sleep(0.3)
        assert _head(repos) == head
        await ann.close()  # ann keeps her copy (full_state) for later
        await server.stop()

        repaired = _store_cli("repair", data)
        assert repaired.returncode == 0, repaired.stderr
        aside = [seq for seq, _kind in stored_rows(data, ROOM, "quarantine")]
        assert aside[0] == middle and aside == [s for s in seqs if s >= middle]
        salvaged = await stored_text(data, ROOM)
        assert typed.startswith(salvaged) and len(salvaged) < len(typed) // 2

        await server.start()  # the recovery scan holds the shrinking commit and reports it
        async with asyncio.timeout(10):
            while ROOM not in (await _health(base))["held"]:
                await asyncio.sleep(0.05)
        async with Client(server.url, user="late") as late:
            assert str(await late.open(ROOM)) == salvaged
        await asyncio.sleep(0.3)
        assert _head(repos) == head  # held, not committed

        # ann's copy is the same history: sent back, it makes the document whole again
        peer = YjsPeer(server.url, ROOM, user="ann")
        peer.doc.apply_update(full_state)
        async with peer:
            await asyncio.wait_for(peer.synced.wait(), 5)
            async with asyncio.timeout(10):
                while True:
                    async with Client(server.url, user="late") as late:
                        if str(await late.open(ROOM)) == typed:
                            break
                    await asyncio.sleep(0.05)
        async with asyncio.timeout(10):
            while (await _health(base))["held"]:
                await asyncio.sleep(0.05)
        assert _head(repos)[1] == typed
        assert (await stored_text(data, ROOM)).count("line 19 typed") == 1
    finally:
        await ann.close()
        await server.stop()
    _fsck(repos)


async def test_a_held_document_is_still_reported_held_after_a_clean_restart(
    repos: Path, tmp_path: Path
) -> None:
    """A store that lost the end of a document's log (its write-ahead log cut short by a
    crash): the document's commits are held, and ``/healthz`` lists it. A clean stop does
    not end that: the next start looks for it again and lists it, before anyone opens it,
    and opening it keeps it held."""
    server = ServerProcess(repos, tmp_path / "data", extra_args=("--commit-idle", "0.05"))
    data = server.data_dir
    await server.start()
    try:
        async with Client(server.url, user="ann") as ann:
            doc = await ann.open(ROOM)
            await _type_keystrokes(doc, "".join(f"line {i} typed key by key\n" for i in range(8)))
            await ann.flush()
            typed = str(doc)
            async with asyncio.timeout(10):
                while _head(repos)[1] != typed:
                    await asyncio.sleep(0.05)
        await server.kill()
        seqs = [seq for seq, kind in stored_rows(data, ROOM) if kind == "u"]
        with sqlite3.connect(data / "store.sqlite3") as db:  # the log's last third is gone
            db.execute(
                "DELETE FROM records WHERE doc_id = ? AND seq >= ?",
                (ROOM, seqs[2 * len(seqs) // 3]),
            )
        db.close()
        head = _head(repos)
        base = server.url.replace("ws://", "http://")
        for _start in range(2):
            await server.start()
            async with asyncio.timeout(10):
                while ROOM not in (await _health(base))["held"]:
                    await asyncio.sleep(0.05)
            async with Client(server.url, user="late") as late:
                assert typed.startswith(str(await late.open(ROOM)))
            await asyncio.sleep(0.3)
            assert ROOM in (await _health(base))["held"]
            assert _head(repos) == head
            await server.stop()
    finally:
        await server.stop()
    _fsck(repos)


class _UnlistableStore(MemoryStore):
    """A store whose file is damaged where the list of its documents lies."""

    async def keys(self, prefix: str = "") -> list[str]:
        raise sqlite3.DatabaseError("database disk image is malformed")


async def test_the_server_starts_when_the_store_cannot_list_its_documents(
    repos: Path, data_dir: Path
) -> None:
    config = make_config(repos, data_dir, store="memory")
    async with CollabServer(config, store=_UnlistableStore()) as server:
        assert server.git.incomplete  # the next start looks again
        async with Client(server.url, user="ann") as ann:
            assert str(await ann.open(ROOM)).startswith("# Demo")


OTHER = "other/main:a.txt"
GARBAGE = "zzzz not a sha\n"


def _has_people_branch(repo: Path) -> bool:
    return bool(git(repo, "for-each-ref", "refs/heads/people/").strip())


def _ref_file(repo: Path, branch: str = "main") -> Path:
    git_dir = repo / ".git" if (repo / ".git").is_dir() else repo
    return git_dir / "refs" / "heads" / branch


async def test_a_damaged_branch_ref_at_recovery_is_reported_and_the_rest_served(
    repos: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash, then a branch ref that holds garbage: the start-up recovery skips that
    branch (listed in ``/healthz`` ``damaged``, its documents refused with DAMAGED) and
    recovers and serves every other repository; once the ref is repaired, the next start
    recovers what was left."""
    slow = make_config(repos, data_dir, commit_idle=30.0, commit_max_lag=60.0)
    async with CollabServer(slow) as first, Client(first.url, user="ann") as ann:
        docs = [await ann.open(room) for room in (ROOM, OTHER)]
        # ann's own branches are made (which commits the branches they start from) before
        # anything is typed
        await until(lambda: all(_has_people_branch(repos / name) for name in ("demo", "other")))
        for doc in docs:
            doc.insert(0, "<typed before the crash>\n")
        await ann.flush()
        _fail_final_commits(monkeypatch)  # stored, never committed: as after a kill -9
    monkeypatch.undo()
    head, text = _head(repos)
    _ref_file(repos / "demo").write_text(GARBAGE)

    async with CollabServer(slow) as second:
        base = second.url.replace("ws://", "http://")
        other = repos / "other"
        assert show(other, "main", "a.txt") == "<typed before the crash>\nother repo\n"
        health = await _health(base)
        assert "demo/main" in health["damaged"] and "damaged" in health["damaged"]["demo/main"]
        assert second.git.incomplete  # the next start looks again
        async with Client(second.url, user="bob") as bob:
            with pytest.raises(ClientError) as refused:
                await bob.open(ROOM)
            assert refused.value.code == ErrorCode.DAMAGED
            assert str(await bob.open(OTHER)).startswith("<typed before the crash>")
        async with YjsPeer(second.url, ROOM, user="carl") as carl:
            assert await carl.wait_closed() == ErrorCode.DAMAGED
    assert _ref_file(repos / "demo").read_text() == GARBAGE  # nothing written over it

    _ref_file(repos / "demo").write_text(head + "\n")  # the operator repairs it
    async with CollabServer(slow) as third:
        assert _head(repos)[1] == "<typed before the crash>\n" + text  # recovered now
        assert (await _health(third.url.replace("ws://", "http://")))["damaged"] == {}
    _fsck(repos)
    subprocess.run(["git", "-C", str(repos / "other"), "fsck", "--full", "--strict"], check=True)


async def test_a_damaged_branch_ref_is_refused_with_damaged_on_a_clean_start(
    repos: Path, data_dir: Path
) -> None:
    head, text = _head(repos)
    _ref_file(repos / "demo").write_text(GARBAGE)
    async with CollabServer(make_config(repos, data_dir)) as server:
        base = server.url.replace("ws://", "http://")
        async with YjsPeer(server.url, ROOM, user="carl") as carl:
            assert await carl.wait_closed() == ErrorCode.DAMAGED
            assert "damaged" in carl.close_reason
        assert "demo/main" in (await _health(base))["damaged"]
        async with Client(server.url, user="carl") as client:  # operations on it too
            for op, args in (
                ("branch.join", {"repo": "demo", "from": "main"}),
                ("merge.preview", {"repo": "demo", "source": "main", "target": "other"}),
            ):
                with pytest.raises(ClientError) as refused:
                    await client.call(op, **args)
                assert refused.value.code == ErrorCode.DAMAGED, (op, refused.value)
        async with YjsPeer(server.url, OTHER, user="carl") as fine:  # the rest is served
            assert await fine.wait_text(lambda text: text == "other repo\n")
        assert _ref_file(repos / "demo").read_text() == GARBAGE

        _ref_file(repos / "demo").write_text(head + "\n")  # repaired while serving
        async with YjsPeer(server.url, ROOM, user="carl") as carl:
            assert await carl.wait_text(lambda found: found == text)
        assert (await _health(base))["damaged"] == {}
    _fsck(repos)
