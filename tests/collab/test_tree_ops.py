"""``branch.files``: the paths of a branch's files, for file trees."""

from __future__ import annotations

import json
import os
from pathlib import Path

import aiohttp
import pytest
from gitcli import git
from servers import make_config

from collab import Client, CollabServer
from gitsync import create_demo_repo


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


async def test_names_that_are_not_utf8_are_listed_with_their_bytes_written_xnn(
    server: CollabServer, repos: Path, tmp_path: Path
) -> None:
    """git takes any bytes as a file name: ``caf\\xe9.txt`` and ``caf\\xe8.txt`` (latin-1)
    are listed so, as merges show them; both used to come out as one name (U+FFFD for the
    byte)."""
    work = tmp_path / "work"
    git(tmp_path, "clone", "-q", str(repos / "demo"), str(work))
    for byte in (b"\xe9", b"\xe8"):
        (work / os.fsdecode(b"caf" + byte + b".txt")).write_bytes(b"text\n")
    git(work, "add", "-A")
    git(work, "commit", "-qm", "latin-1 names")
    git(work, "push", "-q", "origin", "HEAD:refs/heads/latin")
    async with Client(server.url, user="alice") as alice:
        value = await alice.call("branch.files", repo="demo", branch="latin")
    assert [path for path in value["files"] if path.startswith("caf")] == [
        "caf\\xe8.txt",
        "caf\\xe9.txt",
    ]


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


async def test_the_python_client_takes_answers_larger_than_what_it_may_send(
    repos: Path, tmp_path: Path
) -> None:
    """The limits on what a client sends (strings of 8 KiB, 1,024 entries) do not bound the
    server's answers: a branch of 1,500 files is listed, and a merge preview of a large
    change comes back with its diff."""
    files = {f"src/f{i:04d}.txt": f"file {i}\n" for i in range(1500)}
    files["big.txt"] = "".join(f"line {i}\n" for i in range(3000))
    create_demo_repo(repos / "big", files)
    async with (
        CollabServer(make_config(repos, tmp_path / "data")) as server,
        Client(server.url, user="alice") as alice,
    ):
        value = await alice.call("branch.files", repo="big", branch="main")
        assert len(value["files"]) == 1501 and value["files"][0] == "big.txt"
        fork = await alice.fork("big", "main")
        doc = await alice.open(f"big/{fork}:big.txt")
        doc.insert(0, "".join(f"added {i}\n" for i in range(2000)))
        await alice.commit("big", fork)
        preview = await alice.merge("big", fork, "main", apply=False)
        assert "added 1999" in json.dumps(preview)
        assert len(json.dumps(preview)) > 20_000
        assert await alice.branches("big")  # the connection is still up
