"""A push that deletes a file someone has open: the live document is emptied, and the next
continuous commit does not bring the file back as an empty one."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from gitcli import git, require_git

from collab import Client, CollabServer


@pytest.fixture(autouse=True)
def _git_cli() -> None:
    require_git()


async def test_deleted_file_with_live_document_stays_deleted(
    server: CollabServer, tmp_path: Path
) -> None:
    url = server.url.replace("ws://", "http://bob:dev@") + "/git/demo.git"
    work = tmp_path / "work"
    await asyncio.to_thread(git, tmp_path, "clone", "-q", url, str(work))
    async with Client(server.url, user="alice") as alice:
        doc = await alice.open("demo/main:README.md")
        await asyncio.to_thread(git, work, "rm", "-q", "README.md")
        await asyncio.to_thread(git, work, "commit", "-qm", "drop the readme")
        await asyncio.to_thread(git, work, "push", "-q", "origin", "main")
        await doc.wait_for(lambda text: text == "")
        await alice.commit("demo", "main")
        await asyncio.sleep(server.config.commit_idle + 0.5)  # a continuous commit would run
        await alice.commit("demo", "main")
    files = git(server.config.repos / "demo", "ls-tree", "-r", "--name-only", "main").split()
    assert "README.md" not in files
