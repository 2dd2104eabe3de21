"""The shared repositories' thread-safety patches on dulwich's packs."""

from __future__ import annotations

import threading
from pathlib import Path

from dulwich.repo import Repo

import gitsync.repos
from gitsync.commits import commit_changes


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
