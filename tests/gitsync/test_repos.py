"""The shared repositories' thread-safety patches on dulwich's packs."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

from dulwich.repo import Repo

import gitsync.repos
from gitsync.objects.commits import commit_changes


def test_a_pack_opened_data_first_opens_its_index_too(repo: Repo, repo_path: Path) -> None:
    commit_changes(
        repo,
        "main",
        {"a.txt": b"alpha\n"},
        message="one",
        author="Tester <t@example.com>",
        expected=None,
    )
    store = Repo(str(repo_path)).object_store  # a fresh store: no pack opened yet
    try:
        pack = store.packs[0]
        assert pack._data is None and pack._idx is None
        assert isinstance(pack, gitsync.repos._Pack)
        opened = threading.Event()

        def open_data() -> None:
            _ = pack.data  # checks the data against the index, which it opens meanwhile
            opened.set()

        threading.Thread(target=open_data, daemon=True).start()
        assert opened.wait(10), "opening a pack's data before its index hung"
        assert pack._idx is not None
    finally:
        store.close()


def test_the_engine_creates_bare_repositories(tmp_path: Path) -> None:
    path = gitsync.repos.create_demo_repo(tmp_path / "demo.git", {"a.txt": "a\n"})
    done = subprocess.run(
        ["git", "-C", str(path), "rev-parse", "--is-bare-repository"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "true"
    assert not (path / ".git").exists()
    repos = gitsync.repos.Repositories(tmp_path)
    try:
        assert repos.names() == ["demo"]
        assert not repos.has_work_tree("demo")
        assert repos.read_file("demo", "main", "a.txt").text == "a\n"
    finally:
        repos.close()
