"""Repositories the server finds: bare ones (all the engine creates) and existing ones with a
work tree, which keep working and are reported, since the engine never updates work trees."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from gitcli import git, git_refused, show, until
from servers import make_config

from collab import Client, ClientError, CollabServer
from gitsync import create_demo_repo
from protocol import ErrorCode


async def test_an_existing_repository_with_a_work_tree_still_works(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    repos = tmp_path / "repos"
    work = repos / "tool"
    work.mkdir(parents=True)
    git(work, "init", "-q", "-b", "main")
    (work / "notes.txt").write_text("first\n")
    git(work, "add", "notes.txt")
    git(work, "commit", "-qm", "notes")
    (repos / "papers").mkdir()  # a plain folder: not served, and said so
    config = make_config(repos, tmp_path / "data", commit_idle=0.1)
    with caplog.at_level(logging.WARNING, logger="collab.server"):
        async with CollabServer(config) as server, Client(server.url, user="alice") as alice:
            doc = await alice.open("tool/main:notes.txt")
            assert str(doc.text) == "first\n"
            doc.insert(0, "live\n")
            await alice.flush()
            await until(lambda: show(work, "main", "notes.txt") == "live\nfirst\n")
    assert any("tool has a work tree" in r.getMessage() for r in caplog.records)
    said = [r.getMessage() for r in caplog.records if "no git repository" in r.getMessage()]
    assert said == [
        f"{repos}/papers is no git repository (DIR/NAME with a .git, or a bare "
        "DIR/NAME.git): not served"
    ]
    assert git(work, "log", "-1", "--format=%an", "main").strip() == "alice"


async def test_a_repository_in_the_sha256_object_format_is_named_at_start_and_not_served(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Its objects cannot be read or written by the engine: it is left out, with the reason,
    rather than served with edits that could never be committed."""
    repos = tmp_path / "repos"
    create_demo_repo(repos / "demo", {"a.txt": "a\n"})
    made = repos / "modern.git"
    git(tmp_path, "init", "-q", "--bare", "--object-format=sha256", str(made))
    assert "sha256" in (made / "config").read_text()
    config = make_config(repos, tmp_path / "data")
    with caplog.at_level(logging.WARNING, logger="collab.server"):
        async with CollabServer(config) as server, Client(server.url, user="alice") as alice:
            assert [
                repo["name"] for repo in (await alice.call("server.status"))["repositories"]
            ] == ["demo"]
            with pytest.raises(ClientError) as refused:
                await alice.open("modern/main:a.txt")
            assert refused.value.code == ErrorCode.NOT_FOUND
            with pytest.raises(ClientError) as joined:
                await alice.join("modern")
            assert joined.value.code == ErrorCode.NOT_FOUND
            url = f"http://alice:dev@127.0.0.1:{server.port}/git/modern.git"
            refused = await git_refused(tmp_path, "clone", "-q", url)
            assert "not found" in refused, refused
            assert str((await alice.open("demo/main:a.txt")).text) == "a\n"
    said = [r.getMessage() for r in caplog.records if "modern.git" in r.getMessage()]
    assert said == [
        f"{repos}/modern.git is a repository whose objects are named by sha256, which the "
        "engine does not support (only sha1): not served"
    ]
