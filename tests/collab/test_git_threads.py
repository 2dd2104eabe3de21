"""Git work stays off the event loop: every repository is opened in a git thread (each
thread its own; opening reads files, which on the loop would stall every room), and clones
taken while commits land read whole commits."""

from __future__ import annotations

import asyncio
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from servers import make_config

from collab import Client, CollabServer
from gitsync import Repositories


async def test_no_repository_is_opened_on_the_event_loop(
    repos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop_thread = threading.current_thread()
    on_loop: list[str] = []
    open_repo = Repositories.open

    def watched(self: Repositories, name: str) -> Any:
        if threading.current_thread() is loop_thread:
            on_loop.append(name)
        return open_repo(self, name)

    monkeypatch.setattr(Repositories, "open", watched)
    config = make_config(repos, tmp_path / "data", commit_idle=0.05, ref_poll=0.05)
    async with CollabServer(config) as server, Client(server.url, user="ann") as ann:
        doc = await ann.open("demo/main:README.md")
        doc.insert(0, "live edit\n")
        await ann.flush()
        topic = await ann.fork("demo", "main", "topic")
        await ann.commit("demo", "main")
        await ann.merge("demo", topic, "main", apply=False)
        await ann.merge("demo", topic, "main")
        clone = tmp_path / "clone"  # another tool, committing beside the engine
        subprocess.run(["git", "clone", "-q", str(repos / "demo"), str(clone)], check=True)
        (clone / "other.txt").write_text("outside\n")
        git = ["git", "-C", str(clone), "-c", "user.name=o", "-c", "user.email=o@o"]
        subprocess.run([*git, "add", "other.txt"], check=True)
        subprocess.run([*git, "commit", "-qm", "outside"], check=True)
        demo = ["git", "-C", str(repos / "demo")]
        subprocess.run([*demo, "config", "receive.denyCurrentBranch", "ignore"], check=True)
        subprocess.run([*git, "pull", "-q", "--no-rebase", "origin", "main"], check=True)
        subprocess.run([*git, "push", "-q", "origin", "main"], check=True)
        room = server.rooms.get_key("demo/main:README.md")
        assert room is not None
        sync = server.git.branches[("demo", "main")]
        head = subprocess.run(
            ["git", "-C", str(clone), "rev-parse", "HEAD"], check=True, capture_output=True
        ).stdout.strip()
        async with asyncio.timeout(10):  # the watcher merges the outside move
            while sync.synced != head:
                await asyncio.sleep(0.02)
    assert on_loop == []


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (args, done.stderr)
    return done.stdout


async def test_clones_taken_while_commits_land_are_whole(repos: Path, tmp_path: Path) -> None:
    """``git clone`` over the git bridge while live edits are committed every few
    milliseconds (a pack per commit, the small packs combined as they pile up), the commits
    written and the clones read in git threads of their own: every clone passes
    ``git fsck --strict``, and its README.md is the file with the first lines typed, in
    order, nothing missing between them."""
    config = make_config(repos, tmp_path / "data", commit_idle=0.01, commit_max_lag=0.05)
    async with CollabServer(config) as server, Client(server.url, user="ann") as ann:
        doc = await ann.open("demo/main:README.md")
        base = str(doc)
        stop = asyncio.Event()

        async def type_lines() -> None:
            n = 0
            while not stop.is_set():
                doc.insert(len(str(doc)), f"line {n}\n")
                await ann.flush()
                n += 1
                await asyncio.sleep(0.005)

        typing = asyncio.create_task(type_lines())
        url = server.url.replace("ws://", "http://ann:dev@") + "/git/demo.git"
        heads: set[str] = set()
        try:
            for n in range(30):
                where = tmp_path / f"clone-{n}"
                await asyncio.to_thread(_git, "clone", "-q", url, str(where))
                await asyncio.to_thread(_git, "-C", str(where), "fsck", "--full", "--strict")
                text = (where / "README.md").read_text()
                assert text.startswith(base), text[:200]
                lines = text[len(base) :].splitlines()
                assert lines == [f"line {k}" for k in range(len(lines))], lines[-5:]
                heads.add(await asyncio.to_thread(_git, "-C", str(where), "rev-parse", "HEAD"))
                if len(heads) >= 4:
                    break
        finally:
            stop.set()
            await typing
    assert len(heads) >= 2  # commits landed between the clones
