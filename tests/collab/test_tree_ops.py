"""``branch.files``: the paths of a branch's files, for file trees."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from gitcli import git

from collab import Client, CollabServer


async def _files(server: CollabServer, **args: str) -> tuple[int, dict[str, object]]:
    url = f"http://127.0.0.1:{server.port}/api/branch.files?user=alice"
    async with aiohttp.ClientSession() as session, session.post(url, json=args) as response:
        return response.status, await response.json()


async def test_files_of_a_branch_are_listed_sorted_with_the_head(
    server: CollabServer, repos: Path
) -> None:
    status, body = await _files(server, repo="demo")
    assert status == 200
    value = body["value"]
    assert isinstance(value, dict)
    assert value["branch"] == "main" and value["truncated"] is False
    assert value["head"] == git(repos / "demo", "rev-parse", "main").strip()
    listed = git(repos / "demo", "ls-tree", "-r", "--name-only", "main").split()
    assert value["files"] == sorted(listed)
    assert value["files"] == ["README.md", "docs/unicode.txt", "src/app.py"]


async def test_a_forked_branch_lists_its_own_files(server: CollabServer) -> None:
    async with Client(server.url, user="alice") as alice:
        fork = await alice.call("branch.fork", repo="demo", source="main")
        value = await alice.call("branch.files", repo="demo", branch=fork["name"])
    assert value["branch"] == fork["name"] and "src/app.py" in value["files"]


@pytest.mark.parametrize(
    ("args", "status"),
    [
        ({"repo": "demo", "branch": "nope"}, 404),
        ({"repo": "missing"}, 404),
        ({"repo": "demo", "branch": "bad..name"}, 400),
        ({}, 400),
    ],
)
async def test_bad_requests_get_clear_errors(
    server: CollabServer, args: dict[str, str], status: int
) -> None:
    got, body = await _files(server, **args)
    assert got == status and "error" in body, body
