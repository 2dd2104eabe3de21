"""Forks made while people open and type: the fork holds each character once, the source's
state at the fork and nothing typed after it, from the source's real head."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from gitcli import git, show, until
from servers import DEMO_FILES, make_config

from collab import Client, CollabServer

README = DEMO_FILES["README.md"]


def _slow_appends(server: CollabServer, prefix: str, delay: float) -> None:
    """The first append to a document below ``prefix`` takes ``delay`` seconds."""
    store = server.branches.store
    append = store.append
    slowed: list[str] = []

    async def slow(key: str, data: bytes, *args: Any, **kwargs: Any) -> int:
        if key.startswith(prefix) and not slowed:
            slowed.append(key)
            await asyncio.sleep(delay)
        return await append(key, data, *args, **kwargs)

    store.append = slow  # type: ignore[method-assign]


async def test_a_document_of_a_fork_opened_while_it_is_made_holds_its_text_once(
    repos: Path, tmp_path: Path
) -> None:
    config = make_config(repos, tmp_path / "data")
    async with (
        CollabServer(config) as server,
        Client(server.url, user="alice") as alice,
        Client(server.url, user="bob") as bob,
    ):
        doc = await alice.open("demo/main:README.md")
        doc.insert(0, "typed\n")
        await alice.flush()
        _slow_appends(server, "demo/forked:", 0.3)
        forking = asyncio.create_task(alice.fork("demo", "main", "forked"))
        await until(lambda: "forked" in git(repos / "demo", "branch", "--list", "forked"))
        opened = await bob.open("demo/forked:README.md")
        await forking
        assert str(opened.text) == "typed\n" + README
    async with CollabServer(config) as server, Client(server.url, user="carol") as carol:
        again = await carol.open("demo/forked:README.md")  # as the store holds it
        assert str(again.text) == "typed\n" + README
        again.insert(0, "carol ")
        await carol.commit("demo", "forked")
        assert show(repos / "demo", "forked", "README.md") == "carol typed\n" + README


async def test_a_document_opened_and_typed_in_while_a_fork_is_made_stays_out_of_it(
    repos: Path, tmp_path: Path
) -> None:
    """The source's documents not loaded are read as they were at the fork, not as someone
    who opens one meanwhile leaves it."""
    config = make_config(repos, tmp_path / "data", grace=0.05)
    async with CollabServer(config) as server, Client(server.url, user="alice") as alice:
        docs = [await alice.open("demo/main:src/app.py"), await alice.open("demo/main:README.md")]
        for doc in docs:
            doc.insert(0, "before ")
        await alice.flush()
        await alice.commit("demo", "main")
        for doc in docs:
            await doc.close()
        await until(lambda: not server.rooms.loaded("demo/main:"))
        branches = server.branches
        capture_loaded, capture_stored = branches._capture_loaded, branches._capture_stored
        snapped = asyncio.Event()

        def snapshot(prefix: str) -> Any:
            snapped.set()
            return capture_loaded(prefix)

        async def slow_capture(*args: Any) -> None:
            if snapped.is_set():
                await asyncio.sleep(0.5)  # someone opens and types meanwhile
            await capture_stored(*args)

        branches._capture_loaded = snapshot  # type: ignore[method-assign]
        branches._capture_stored = slow_capture  # type: ignore[method-assign]
        forking = asyncio.create_task(alice.fork("demo", "main", "forked"))
        await snapped.wait()
        async with Client(server.url, user="bob") as bob:
            for path in ("src/app.py", "README.md"):
                late = await bob.open(f"demo/main:{path}")
                late.insert(0, "LATE ")
            await bob.flush()
            await forking
        for path in ("src/app.py", "README.md"):
            forked = await alice.open(f"demo/forked:{path}")
            assert str(forked.text) == "before " + DEMO_FILES[path], path
            assert show(repos / "demo", "forked", path) == str(forked.text)
            source = await alice.open(f"demo/main:{path}")
            assert str(source.text) == "LATE before " + DEMO_FILES[path], path


async def test_a_fork_starts_at_a_move_of_its_source_made_outside_the_engine(
    repos: Path, tmp_path: Path
) -> None:
    config = make_config(repos, tmp_path / "data")
    async with CollabServer(config) as server, Client(server.url, user="alice") as alice:
        doc = await alice.open("demo/main:README.md")
        doc.insert(0, "live ")
        await alice.commit("demo", "main")
        work = tmp_path / "work"
        git(tmp_path, "clone", "-q", str(repos / "demo"), str(work))
        (work / "outside.txt").write_text("made outside\n")
        git(work, "add", "outside.txt")
        git(work, "commit", "-qm", "outside")
        git(work, "push", "-q", "origin", "main")  # straight into the repository's files
        moved = git(repos / "demo", "rev-parse", "main").strip()
        fork = await alice.fork("demo", "main", "forked")
        assert fork == "forked"
        head = git(repos / "demo", "rev-parse", "forked").strip()
        assert git(repos / "demo", "merge-base", "--is-ancestor", moved, head) == ""
        assert show(repos / "demo", "forked", "outside.txt") == "made outside\n"
        doc.insert(0, "more ")  # the source has live documents, and a pending edit
        await alice.flush()
        (work / "outside.txt").write_text("made outside again\n")
        git(work, "commit", "-qam", "outside again")
        git(work, "push", "-q", "origin", "main")
        created = await alice.call("branch.create", repo="demo", name="made", **{"from": "main"})
        assert show(repos / "demo", created["name"], "outside.txt") == "made outside again\n"
        assert show(repos / "demo", created["name"], "README.md") == "more live " + README
