"""Fixtures of the working-tree tests: a real server, a syncer on a real directory watched by
the real watcher, and editors' save styles acted out on real files."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from collab import CollabServer
from collab.disk import WorkingTree


@pytest.fixture(autouse=True)
def _tools() -> None:
    missing = [name for name in ("git",) if shutil.which(name) is None]
    try:
        import watchfiles  # noqa: F401
    except ImportError:
        missing.append("watchfiles (the disk extra)")
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {', '.join(missing)} is missing", pytrace=False)
        pytest.skip(f"{', '.join(missing)} is missing")


class Events(list[dict[str, Any]]):
    """The events a syncer reported."""

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [event for event in self if event.get("event") == kind]


MakeTree = Callable[..., WorkingTree]


@pytest.fixture
async def make_tree(server: CollabServer) -> AsyncIterator[MakeTree]:
    """Makes syncers of ``demo`` (branch main unless told) as alice; stops those left running."""
    made: list[WorkingTree] = []

    def make(root: Path, branch: str | None = "main", **options: Any) -> WorkingTree:
        events = options.pop("events", Events())
        tree = WorkingTree(
            root, server.url, "demo", branch, user="alice", report=events.append, **options
        )
        tree.events = events  # type: ignore[attr-defined]
        made.append(tree)
        return tree

    yield make
    for tree in made:
        if tree.client is not None and not tree.client._closed:
            await tree.stop()


# -- editors' save styles ----------------------------------------------------------------------
# Each writes ``text`` to ``path`` as an editor does, pausing between its steps so that the
# syncer may look at the file half way through, as it may when a real editor saves.

PAUSE = 0.003


async def save_in_place(path: Path, text: str) -> None:
    """Truncate the file, then write it (``:set backupcopy=yes``, most editors' default)."""
    with open(path, "r+b") as handle:
        handle.truncate(0)
        handle.flush()
        await asyncio.sleep(PAUSE)
        handle.write(text.encode())


async def save_by_rename(path: Path, text: str) -> None:
    """Write a temporary file, move the file aside, rename the temporary over it, drop the
    old one (JetBrains' safe write; vim's writebackup is the same moves)."""
    temp = path.with_name(path.name + "___jb_tmp___")
    temp.write_text(text)
    old = path.with_name(path.name + "___jb_old___")
    os.replace(path, old)
    await asyncio.sleep(PAUSE)
    os.replace(temp, path)
    os.unlink(old)


async def save_delete_create(path: Path, text: str) -> None:
    """Delete the file, then create it anew."""
    os.unlink(path)
    await asyncio.sleep(PAUSE)
    path.write_text(text)


async def save_rapidly(path: Path, text: str) -> None:
    """Three saves within a few milliseconds (a formatter on save, an autosave)."""
    for _ in range(3):
        path.write_text(text)
        await asyncio.sleep(PAUSE / 3)


SAVE_STYLES = [save_in_place, save_by_rename, save_delete_create, save_rapidly]


def blob(server: CollabServer, spec: str) -> bytes:
    """``git show SPEC`` in the server's ``demo``, as bytes (no newline translation)."""
    return subprocess.run(
        ["git", "-C", str(server.config.repos / "demo"), "show", spec],
        capture_output=True,
        check=True,
    ).stdout


async def until(predicate: Callable[[], object], timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)
