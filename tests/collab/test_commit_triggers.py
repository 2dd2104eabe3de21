"""Continuous commits: no edit is left behind by a commit in progress, and every edit's author
is credited in the commit that holds it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from eventwait import Events
from gitcli import git
from servers import make_config
from yjsclient import YjsPeer

from collab import Client, CollabServer
from collab.live.origin import Origin
from collab.server.auth import Identity, Role

ROOM = "demo/main:README.md"


def _git(repos: Path, *args: str) -> str:
    return git(repos / "demo", *args)


async def test_an_edit_made_during_a_long_commit_is_committed_without_another_keystroke(
    repos: Path, tmp_path: Path
) -> None:
    config = make_config(repos, tmp_path / "data", commit_idle=0.05, commit_max_lag=100.0)
    async with CollabServer(config) as server, Client(server.url, user="ann") as ann:
        doc = await ann.open(ROOM)
        await ann.join("demo")
        sync = server.git.branches[("demo", "main")]
        write = sync._write

        def slow_write(*args: Any) -> tuple[bytes, list[str]]:
            time.sleep(0.4)  # a commit that outlasts the idle time (a slow disk, a big tree)
            return write(*args)

        sync._write = slow_write  # type: ignore[method-assign]
        doc.insert(0, "first\n")
        await ann.flush()
        async with asyncio.timeout(5):  # the first commit has started
            while not sync.lock.locked():
                await asyncio.sleep(0.01)
        doc.insert(0, "second\n")  # lands while it runs; no keystroke follows
        await ann.flush()
        async with asyncio.timeout(5):
            while "second" not in _git(repos, "show", "main:README.md"):
                await asyncio.sleep(0.05)


async def test_an_edit_landing_while_a_commit_drains_keeps_its_author(
    repos: Path, tmp_path: Path
) -> None:
    config = make_config(repos, tmp_path / "data", commit_idle=100.0, commit_max_lag=100.0)
    async with CollabServer(config) as server, Client(server.url, user="ann") as ann:
        doc = await ann.open(ROOM)
        await ann.join("demo")  # her own branch exists: nothing commits main behind our back
        doc.insert(0, "ann was here\n")
        await ann.flush()
        room = server.rooms.get_key(ROOM)
        assert room is not None
        drain = room.drain
        pia = Identity("pia", Role.WRITE, "*")

        async def drain_while_pia_types() -> None:
            await drain()
            room.edit(lambda text: text.insert(0, "pia too\n"), origin=Origin.CLIENT, author=pia)
            await drain()

        room.drain = drain_while_pia_types  # type: ignore[method-assign]
        sync = server.git.branches[("demo", "main")]
        await sync.flush()
        room.drain = drain  # type: ignore[method-assign]
        await sync.flush()
        assert "pia too" in _git(repos, "show", "main:README.md")
        log = _git(repos, "log", "--format=%an%n%(trailers:key=Co-authored-by,valueonly)", "main")
        credited = {line.split(" <")[0] for line in log.splitlines() if line.strip()}
        assert {"ann", "pia"} <= credited


async def test_a_commit_names_only_the_files_it_changes(repos: Path, tmp_path: Path) -> None:
    """A document typed in and back to its committed text is not named in the commit's
    subject, nor in its event, though it was marked changed."""
    config = make_config(repos, tmp_path / "data", commit_idle=0.05)
    async with (
        CollabServer(config) as server,
        Client(server.url, user="ann") as ann,
        Client(server.url, user="watcher") as watcher,
    ):
        await watcher.subscribe("events.subscribe", repo="demo")
        readme = await ann.open(ROOM)
        app = await ann.open("demo/main:src/app.py")
        readme.insert(0, "x")
        readme.delete(0, 1)
        app.insert(0, "# typed\n")
        await ann.flush()
        head = await ann.commit("demo", "main")
        assert _git(repos, "log", "-1", "--format=%s", head).strip() == "Edit src/app.py"
        shown = _git(repos, "show", "--name-only", "--format=", head).split()
        assert shown == ["src/app.py"]
        event = await Events(watcher).wait_for("commit", commit=head)
        assert event["files"] == ["src/app.py"]


async def test_a_file_opened_and_left_empty_is_not_made(repos: Path, tmp_path: Path) -> None:
    """A document of a path the branch lacks opens empty; opened by a stock client (whose
    answer to sync step 1 is an empty update) or typed in and emptied again, it makes no
    file; typed in, it does."""
    config = make_config(repos, tmp_path / "data", commit_idle=30.0, commit_max_lag=60.0)
    async with CollabServer(config) as server, Client(server.url, user="ann") as ann:
        async with YjsPeer(server.url, "demo/main:phantom.txt", user="bob") as bob:
            await asyncio.wait_for(bob.synced.wait(), 5)
            await asyncio.sleep(0.3)
        sync = server.git.branches[("demo", "main")]
        assert not sync.dirty  # nothing to commit: the empty answer changed nothing
        await ann.join("demo")  # (made from main: it would commit main's pending edits)
        emptied = await ann.open("demo/main:emptied.txt")
        emptied.insert(0, "x")
        await ann.flush()
        emptied.delete(0, 1)
        await ann.flush()
        made = await ann.open("demo/main:made.txt")
        made.insert(0, "made\n")
        head = await ann.commit("demo", "main")
        files = _git(repos, "ls-tree", "-r", "--name-only", head).split()
        assert "made.txt" in files
        assert "phantom.txt" not in files and "emptied.txt" not in files
        assert _git(repos, "log", "-1", "--format=%s", head).strip() == "Edit made.txt"
