"""The rescue commit of a branch the engine itself deleted (``branch.delete``) says who
deleted it, not that it was deleted outside the engine."""

from __future__ import annotations

import subprocess
from pathlib import Path

from gitcli import until

from collab import Client, CollabServer


def git(repos: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "--git-dir", str(repos / "demo"), *args], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


async def test_the_rescue_of_the_engines_own_deletion_says_who_deleted_the_branch(
    server: CollabServer, repos: Path
) -> None:
    """A document of topic whose text git's fsck refuses is not committed; the branch is
    deleted with ``branch.delete``: the text is kept on a rescue branch, whose commit says
    who deleted topic."""
    async with Client(server.url, user="ann") as ann:
        await ann.call("branch.create", repo="demo", name="topic")
        modules = await ann.open("demo/topic:.gitmodules")
        modules.insert(0, '[submodule "x"]\n\tpath = x\n\turl = --upload-pack=touch\n')
        await ann.flush()
        await ann.commit("demo", "topic")  # held: not committed
        await modules.close()
        await until(lambda: server.rooms.get_key("demo/topic:.gitmodules") is None)
        await ann.call("branch.delete", repo="demo", name="topic")
    [rescued] = git(repos, "branch", "--list", "--format=%(refname:short)", "topic*").split()
    assert rescued.startswith("topic-rescued-")
    message = git(repos, "log", "-1", "--format=%B", rescued)
    assert "topic was deleted by ann (branch.delete)" in message, message
    assert "outside the engine" not in message
