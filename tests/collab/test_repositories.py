"""Repositories the server finds: bare ones (all the engine creates) and existing ones with a
work tree, which keep working and are reported, since the engine never updates work trees."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from gitcli import git, show, until
from servers import make_config

from collab import Client, CollabServer


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
