"""A push that deletes a file someone has open: the live document is emptied, and the next
continuous commit does not bring the file back as an empty one. A push that deletes a branch
while someone opens one of its documents: the open waits for it, and finds no branch."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from gitcli import git, require_git

from collab import Client, ClientError, CollabServer
from protocol.errors import ErrorCode


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


async def test_a_document_opened_while_a_push_deletes_its_branch_finds_no_branch(
    server: CollabServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The push looks for open documents of the branches it deletes, then takes its pack and
    moves the refs: a document opened in between, and typed in, used to be closed under its
    user once the branch was gone. Now the open waits for the push, and finds no branch."""
    bridge = server.git_bridge
    real_open_deleted = bridge._open_deleted
    reached, go = asyncio.Event(), asyncio.Event()

    async def paused(repo: str, commands: list[tuple[bytes, bytes, bytes]]) -> dict[str, str]:
        found = await real_open_deleted(repo, commands)
        reached.set()
        await go.wait()
        return found

    monkeypatch.setattr(bridge, "_open_deleted", paused)
    url = server.url.replace("ws://", "http://bob:dev@") + "/git/demo.git"
    work = tmp_path / "work"
    await asyncio.to_thread(git, tmp_path, "clone", "-q", url, str(work))
    async with Client(server.url, user="alice") as alice:
        await alice.join("demo")
        await alice.call("branch.create", repo="demo", name="doomed")
        pushing = asyncio.create_task(
            asyncio.to_thread(git, work, "push", "-q", "origin", ":refs/heads/doomed")
        )
        await asyncio.wait_for(reached.wait(), 10)
        opening = asyncio.create_task(alice.open("demo/doomed:README.md"))
        await asyncio.sleep(0.5)
        assert not opening.done(), "opened while a push was deleting the branch"
        go.set()
        await pushing
        with pytest.raises(ClientError) as gone:
            await opening
        assert gone.value.code == ErrorCode.NOT_FOUND
    assert git(server.config.repos / "demo", "branch", "--list", "doomed") == ""
