"""Paths whose place in the branch's tree holds no text file (a directory, a symbolic link, a
submodule, or anything below a file): opening one is refused with 4013, and the branch is
left as it was."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from gitcli import git
from servers import make_config
from yjsclient import YjsPeer

from collab import CollabServer
from protocol.errors import ErrorCode

SUBMODULE_COMMIT = "1f6589ec3a1ee910f9a65cc3ceac60b26677bc0e"


@pytest.fixture
async def tree_server(tmp_path: Path) -> AsyncIterator[tuple[CollabServer, Path]]:
    bare = tmp_path / "repos" / "demo.git"
    git(tmp_path, "init", "-q", "-b", "main", "--bare", str(bare))
    seed = tmp_path / "seed"
    git(tmp_path, "init", "-q", "-b", "main", str(seed))
    (seed / "dir").mkdir()
    (seed / "dir" / "keep.txt").write_text("keep me\n")
    (seed / "file.txt").write_text("a file\n")
    os.symlink("dir", seed / "linkdir")
    git(seed, "add", "-A")
    git(seed, "update-index", "--add", "--cacheinfo", f"160000,{SUBMODULE_COMMIT},sub")
    git(seed, "commit", "-qm", "seed")
    git(seed, "push", "-q", str(bare), "main")
    config = make_config(tmp_path / "repos", tmp_path / "data", commit_idle=0.1)
    async with CollabServer(config) as server:
        yield server, bare


@pytest.mark.parametrize(
    "path", ["dir", "linkdir", "sub", "file.txt/below", "linkdir/x.txt", "sub/x.txt"]
)
async def test_a_path_that_is_no_text_file_is_refused_with_4013(
    tree_server: tuple[CollabServer, Path], path: str
) -> None:
    server, bare = tree_server
    before = git(bare, "rev-parse", "main")
    async with YjsPeer(server.url, f"demo/main:{path}", user="ann") as peer:
        assert await peer.wait_closed() == ErrorCode.NOT_TEXT
    await asyncio.sleep(0.3)  # past the commit delay: nothing was committed
    assert git(bare, "rev-parse", "main") == before
    assert len(server.rooms) == 0
