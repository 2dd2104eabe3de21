"""Edits made while the syncer was stopped or disconnected merge on the next start, three-way
against the last synced state recorded in the tree; a conflict leaves markers on both sides,
and a syncer killed in the middle of a burst loses nothing."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import MakeTree, until
from gitcli import git
from test_disk_git import other_clone

from collab import Client, CollabServer
from collab.disk.state import STATE_FILE, SyncState, digest

ROOT = Path(__file__).resolve().parents[3]


async def test_offline_edits_on_both_sides_merge_on_restart(
    server: CollabServer, make_tree: MakeTree, tmp_path: Path
) -> None:
    root = tmp_path / "wt"
    async with Client(server.url, user="bob") as bob:
        doc = await bob.open("demo/main:src/app.py")
        doc.delete(0, len(str(doc.text)))
        doc.insert(0, "".join(f"line{n}\n" for n in range(10)))
        await bob.flush()
        tree = make_tree(root)
        await tree.start()
        await tree.wait_idle()
        await tree.stop()
        path = root / "src" / "app.py"
        # stopped: the disk changes line 1 and 5, the live document line 5 and 8
        path.write_text(
            path.read_text().replace("line1\n", "line1 disk\n").replace("line5\n", "line5 disk\n")
        )
        text = str(doc.text)
        doc.insert(text.index("line5") + 5, " live")
        text = str(doc.text)
        doc.insert(text.index("line8") + 5, " live")
        (root / "README.md").write_text("# Demo\n\nchanged offline\n")
        await bob.flush()
        again = make_tree(root)
        await again.start()
        conflict = "line4\n<<<<<<< disk\nline5 disk\n=======\nline5 live\n>>>>>>> live\nline6\n"
        await doc.wait_for(lambda t: conflict in t)
        await again.wait_idle()
        merged = path.read_text()
        assert merged == str(doc.text)
        assert "line1 disk\n" in merged and "line8 live\n" in merged
        assert [e["path"] for e in again.events.of("conflict")] == ["src/app.py"]  # type: ignore[attr-defined]
        readme = await bob.open("demo/main:README.md")
        await readme.wait_for(lambda t: t == "# Demo\n\nchanged offline\n")


async def test_edits_while_disconnected_reach_the_server_on_reconnect(
    server: CollabServer, make_tree: MakeTree, tmp_path: Path
) -> None:
    root = tmp_path / "wt"
    tree = make_tree(root)
    await tree.start()
    async with Client(server.url, user="bob") as bob:
        doc = await bob.open("demo/main:README.md")
        assert tree.client is not None
        tree.client.reconnect = True
        tree.client.min_backoff = tree.client.max_backoff = 0.5
        await tree.client.drop_connection()
        (root / "README.md").write_text("# Demo\n\nwritten while disconnected\n")
        await doc.wait_for(lambda t: "while disconnected" in t, timeout=15)
        await tree.wait_idle()


def _sync_command(root: Path, url: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "collab",
        "sync",
        str(root),
        "--url",
        url,
        "--repo",
        "demo",
        "--branch",
        "main",
        "--user",
        "alice",
        "--json",
    ]


def _is_ready(event: dict[str, Any]) -> bool:
    return bool(event["event"] == "ready")


async def _start_syncer(
    root: Path, url: str, started: Callable[[dict[str, Any]], bool] = _is_ready
) -> tuple[asyncio.subprocess.Process, list[dict]]:
    """``collab sync`` in a process of its own, once it reported an event ``started``
    takes for its start (default: ready)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = await asyncio.create_subprocess_exec(
        *_sync_command(root, url),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env=env,
    )
    events: list[dict] = []
    assert process.stdout is not None
    async with asyncio.timeout(30):
        while True:
            line = await process.stdout.readline()
            assert line, "the syncer exited before it was ready"
            events.append(json.loads(line))
            if started(events[-1]):
                break

    async def pump() -> None:
        assert process.stdout is not None
        while line := await process.stdout.readline():
            events.append(json.loads(line))

    events_task = asyncio.create_task(pump())
    process._pump = events_task  # type: ignore[attr-defined]
    return process, events


async def test_killed_mid_burst_and_restarted_loses_nothing(
    server: CollabServer, make_tree: MakeTree, tmp_path: Path
) -> None:
    """``collab sync`` killed (SIGKILL) while a burst of 200 new files and 20 edits is being
    synced; edits keep coming while it is down; the next start brings every one of them to
    the live documents, exactly once."""
    root = tmp_path / "wt"
    process, events = await _start_syncer(root, server.url)
    expected: dict[str, str] = {}
    for n in range(200):
        name = f"burst/f{n:03d}.txt"
        (root / "burst").mkdir(exist_ok=True)
        (root / name).write_text(f"file {n}\n")
        expected[name] = f"file {n}\n"
    async with asyncio.timeout(30):
        while sum(1 for e in events if e["event"] == "sync") < 20:
            await asyncio.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    await process.wait()
    synced_before = sum(1 for e in events if e["event"] == "sync")
    assert synced_before < 220, "the burst was over before the kill"
    for n in range(0, 200, 10):
        name = f"burst/f{n:03d}.txt"
        expected[name] = f"file {n}\nedited while the syncer was down\n"
        (root / name).write_text(expected[name])
    tree = make_tree(root)
    await tree.start()
    await tree.wait_idle(timeout=60)
    async with Client(server.url, user="bob") as bob:
        for name, text in expected.items():
            doc = await bob.open(f"demo/main:{name}")
            assert str(doc.text) == text, name
            await doc.close()


async def test_a_change_noted_but_never_sent_is_sent_on_restart(
    server: CollabServer, make_tree: MakeTree, tmp_path: Path
) -> None:
    """The syncer died right after noting a change it was about to send: a new file that
    never reached the server, and an edit that did. The next start sends the first, and does
    not apply the second twice nor empty either file."""
    root = tmp_path / "wt"
    tree = make_tree(root)
    await tree.start()
    await tree.stop()
    (root / "new.txt").write_text("never sent\n")
    edited = "# Demo\n\nHello from the demo repository.\narrived\n"
    (root / "README.md").write_text(edited)
    async with Client(server.url, user="bob") as bob:
        readme = await bob.open("demo/main:README.md")
        readme.insert(len(str(readme.text)), "arrived\n")  # what the dead syncer had sent
        await bob.flush()
        state = SyncState(root / ".git" / STATE_FILE)
        state.note_sent("new.txt", b"never sent\n", live=True, disk=False)
        state.note_sent("README.md", edited.encode(), live=True, disk=False)
        state.close()
        again = make_tree(root)
        await again.start()
        new = await bob.open("demo/main:new.txt")
        await new.wait_for(lambda t: t == "never sent\n")
        assert (root / "new.txt").read_text() == "never sent\n"
        assert str(readme.text) == edited == (root / "README.md").read_text()
        assert not again.events.of("conflict")  # type: ignore[attr-defined]


async def test_a_change_that_arrived_and_was_typed_on_merges_cleanly_on_restart(
    server: CollabServer, make_tree: MakeTree, tmp_path: Path
) -> None:
    """The syncer died after sending a save that arrived; since, someone typed on in the
    live text, and the file was saved again, on the very line the first save wrote. The
    change is known as arrived (each side holds it, more done since), so the next start
    merges from it: no conflict markers for a line one side only changed."""
    root = tmp_path / "wt"
    tree = make_tree(root)
    await tree.start()
    await tree.stop()
    original = (root / "README.md").read_text()
    sent = original + "saved L1\n"
    (root / "README.md").write_text(original + "saved L1 L2\n")  # saved on, same line
    async with Client(server.url, user="bob") as bob:
        readme = await bob.open("demo/main:README.md")
        readme.insert(len(str(readme.text)), "saved L1\n")  # what the dead syncer had sent
        readme.insert(len("# Demo"), " remote")  # typed since
        await bob.flush()
        state = SyncState(root / ".git" / STATE_FILE)
        state.note_sent("README.md", sent.encode(), live=True, disk=False)
        state.close()
        again = make_tree(root)
        await again.start()
        expected = original.replace("# Demo", "# Demo remote", 1) + "saved L1 L2\n"
        await readme.wait_for(lambda t: t == expected)
        await again.wait_idle(timeout=10)
        assert (root / "README.md").read_text() == expected
        assert not again.events.of("conflict")  # type: ignore[attr-defined]


def test_the_bases_are_found_by_their_content_as_they_change_and_after_a_restart(
    tmp_path: Path,
) -> None:
    """A file new on disk is looked up among the bases by its hash (a rename): the index
    follows every change of a base, and is rebuilt from the file at the next start."""
    path = tmp_path / STATE_FILE
    state = SyncState(path)
    hello, bye = digest(b"hello\n"), digest(b"bye\n")
    state.set_base("a.txt", b"hello\n")
    state.set_bases({"b.txt": b"hello\n", "c.txt": b"bye\n"})
    assert state.paths_with(hello) == {"a.txt", "b.txt"}
    state.set_base("a.txt", b"bye\n")
    state.forget(["b.txt"])
    assert state.paths_with(hello) == set() and state.paths_with(bye) == {"a.txt", "c.txt"}
    state.close()
    again = SyncState(path)
    assert again.paths_with(bye) == {"a.txt", "c.txt"} and again.paths_with(hello) == set()
    again.close()


async def test_a_file_edited_while_disconnected_is_not_closed_to_make_room(
    server: CollabServer, make_tree: MakeTree, tmp_path: Path
) -> None:
    """The syncer at its limit of open documents while the server is away: a document
    holding an edit the server has not confirmed is not the one closed to make room for
    another file (closing it dropped the edit, and the sync recorded it as synced)."""
    root = tmp_path / "wt"
    tree = make_tree(root, open_limit=3)
    await tree.start()
    for i in range(3):
        (root / f"f{i}.txt").write_text(f"file {i}\n")
    async with Client(server.url, user="bob") as bob:
        first = await bob.open("demo/main:f0.txt")
        await tree.wait_idle()
        assert tree.client is not None
        tree.client.reconnect = True
        tree.client.min_backoff = tree.client.max_backoff = 2.0
        await tree.client.drop_connection()
        (root / "f0.txt").write_text("file 0\nwritten while disconnected\n")
        await asyncio.sleep(0.5)  # (the edit is made in its document, not sent)
        for i in (3, 4):
            (root / f"f{i}.txt").write_text(f"file {i}, new while disconnected\n")
        await first.wait_for(lambda t: "while disconnected" in t, timeout=20)
        await tree.wait_idle()
        for i in (3, 4):
            doc = await bob.open(f"demo/main:f{i}.txt")
            assert str(doc.text) == f"file {i}, new while disconnected\n"
    assert (root / "f0.txt").read_text() == "file 0\nwritten while disconnected\n"


async def test_files_new_while_every_open_document_holds_unsent_edits_still_go_live(
    server: CollabServer, make_tree: MakeTree, tmp_path: Path
) -> None:
    """Every document the syncer has open holds an edit made while the server was away,
    and new files come: once the server has the edits back, those documents make room
    (opened past the limit, the new files met the server's cap of open documents, and were
    taken for files that are not text: committed through git for the rest of the run)."""
    server.config.max_open_docs = 8  # (the limit, and the new files opened at once)
    root = tmp_path / "wt"
    tree = make_tree(root, open_limit=3)
    await tree.start()
    for i in range(3):
        (root / f"f{i}.txt").write_text(f"file {i}\n")
    await until(lambda: len(tree.events.of("sync")) >= 3, timeout=20)  # type: ignore[attr-defined]
    await tree.wait_idle()
    assert tree.client is not None
    tree.client.reconnect = True
    tree.client.min_backoff = tree.client.max_backoff = 2.0
    await tree.client.drop_connection()
    for i in range(3):
        (root / f"f{i}.txt").write_text(f"file {i}\nwritten while disconnected\n")
    await asyncio.sleep(0.5)  # (the edits are made in their documents, not sent)
    new = [f"n{i}.txt" for i in range(6)]
    for path in new:
        (root / path).write_text(f"{path}, new while disconnected\n")
    async with Client(server.url, user="bob") as bob:
        for path in new:
            doc = await bob.open(f"demo/main:{path}")
            await doc.wait_for(lambda t, p=path: t == f"{p}, new while disconnected\n", timeout=30)
            await doc.close()
    await tree.wait_idle()
    directions = {e["path"]: e["direction"] for e in tree.events.of("sync")}  # type: ignore[attr-defined]
    assert all(directions[path] == "disk->live" for path in new), [directions[p] for p in new]


async def test_a_push_made_while_the_syncer_reconnects_reaches_the_disk(
    server: CollabServer, make_tree: MakeTree, tmp_path: Path
) -> None:
    """A push lands while the syncer's connection is down: the event that told of it is
    lost with the connection, so the syncer fetches the branch when it is back, and the
    pushed files reach the disk."""
    root = tmp_path / "wt"
    tree = make_tree(root)
    await tree.start()
    client = tree.client
    assert client is not None
    back = asyncio.Event()
    connect = client._connect_once

    async def held(welcomed: asyncio.Future[None]) -> None:
        await back.wait()
        await connect(welcomed)

    client._connect_once = held  # type: ignore[method-assign]
    client.min_backoff = client.max_backoff = 0.05
    await client.drop_connection()
    await until(lambda: not client.connected.is_set())
    work = await asyncio.to_thread(other_clone, server, tmp_path)
    (work / "pushed.txt").write_text("pushed while the syncer was away\n")
    (work / "src" / "app.py").write_text("print('pushed')\n")
    await asyncio.to_thread(git, work, "add", "-A")
    await asyncio.to_thread(git, work, "commit", "-qm", "pushed while away")
    await asyncio.to_thread(git, work, "push", "-q", "origin", "main")
    back.set()
    await until(lambda: (root / "pushed.txt").exists(), timeout=10)
    await tree.wait_idle()
    assert (root / "pushed.txt").read_text() == "pushed while the syncer was away\n"
    assert (root / "src" / "app.py").read_text() == "print('pushed')\n"


def _writes_many(event: dict[str, Any]) -> bool:
    return bool(event["event"] == "sync" and event["path"].startswith("many/"))


@pytest.mark.parametrize("moment", ["following", "starting"])
async def test_killed_while_a_push_reaches_the_disk_the_restart_brings_the_rest(
    server: CollabServer, make_tree: MakeTree, tmp_path: Path, moment: str
) -> None:
    """``collab sync`` killed (SIGKILL) while it writes the files a push changed, pushed
    while it runs (``following``) or while it was stopped (``starting``): the head it
    followed is recorded with the files still to write, so the next start writes them, and
    git in the tree sees nothing changed (no phantom edits that would undo the push)."""
    root = tmp_path / "wt"
    work = await asyncio.to_thread(other_clone, server, tmp_path)
    names = [f"many/f{n:03d}.txt" for n in range(200)]
    (work / "many").mkdir()
    for name in names:
        (work / name).write_text(f"{name} as first pushed\n")
    await asyncio.to_thread(git, work, "add", "-A")
    await asyncio.to_thread(git, work, "commit", "-qm", "many files")
    await asyncio.to_thread(git, work, "push", "-q", "origin", "main")

    async def push() -> None:
        for name in names:
            (work / name).write_text(f"{name} changed by a push\n")
        await asyncio.to_thread(git, work, "commit", "-qam", "change them all")
        await asyncio.to_thread(git, work, "push", "-q", "origin", "main")

    if moment == "following":
        process, events = await _start_syncer(root, server.url)
        try:
            await push()
            await until(lambda: any(_writes_many(event) for event in events))
        finally:
            process.send_signal(signal.SIGKILL)
            await process.wait()
    else:
        first = make_tree(root)
        await first.start()
        await first.stop()
        await push()
        process, events = await _start_syncer(root, server.url, _writes_many)
        process.send_signal(signal.SIGKILL)
        await process.wait()
    stale = [n for n in names if (root / n).read_text() != f"{n} changed by a push\n"]
    assert stale, "every file was written before the kill"
    tree = make_tree(root)
    await tree.start()
    await tree.wait_idle()
    assert [n for n in names if (root / n).read_text() != f"{n} changed by a push\n"] == []
    assert git(root, "status", "--porcelain") == ""


async def test_the_files_a_killed_write_left_are_cleared_at_the_next_start(
    server: CollabServer, make_tree: MakeTree, tmp_path: Path
) -> None:
    """A syncer killed while writing a file leaves its temporary beside it: the next start
    removes one that holds what the branch (or the file) holds, a write it makes again if
    need be; one that holds anything else may be a save set aside, and is kept, reported."""
    root = tmp_path / "wt"
    tree = make_tree(root)
    await tree.start()
    await tree.wait_idle()
    await tree.stop()
    readme = (root / "README.md").read_bytes()
    ours = root / ".README.md.collab-tmp-99999"
    ours.write_bytes(readme)
    theirs = root / "src" / ".app.py.collab-tmp-99998"
    theirs.write_text("a save set aside\n")
    again = make_tree(root)
    await again.start()
    await again.wait_idle()
    assert not ours.exists()
    assert theirs.read_text() == "a save set aside\n"
    reported = [e["path"] for e in again.events.of("error")]  # type: ignore[attr-defined]
    assert reported == ["src/app.py"]
