"""Repositories: found under a root, bare when the engine makes them, and opened once per
thread, so that readers follow a writer's packs with no store shared between threads."""

from __future__ import annotations

import subprocess
import threading
from concurrent.futures import Future
from pathlib import Path

import pytest
from dulwich.repo import Repo

import gitsync.packs.write as packing
import gitsync.repos
from gitsync.objects.commits import commit_changes, read_ref
from gitsync.packs.write import pack_count
from gitsync.repos import Repositories, create_demo_repo

AUTHOR = "Tester <t@example.com>"


def test_each_thread_opens_a_repository_of_its_own(tmp_path: Path) -> None:
    create_demo_repo(tmp_path / "demo.git", {"a.txt": "a\n"})
    repos = Repositories(tmp_path)
    here = repos.open("demo")
    assert repos.open("demo") is here  # one per thread, kept
    there: list[Repo] = []
    thread = threading.Thread(target=lambda: there.append(repos.open("demo")))
    thread.start()
    thread.join()
    assert there[0] is not here
    assert there[0].object_store is not here.object_store
    in_executor = repos.executor.submit(repos.open, "demo").result()
    assert in_executor is not here and in_executor is not there[0]
    repos.close()
    again = Repositories(tmp_path)
    try:
        assert again.open("demo").head() == here.head()
    finally:
        again.close()


def test_a_root_that_is_itself_a_repository_names_none_by_its_git_directory(
    tmp_path: Path,
) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    create_demo_repo(tmp_path / "demo.git", {"a.txt": "a\n"})
    repos = Repositories(tmp_path)
    try:
        assert repos.names() == ["demo"]  # not "", for the root's own .git
    finally:
        repos.close()


def test_a_closed_repositories_opens_afresh(tmp_path: Path) -> None:
    create_demo_repo(tmp_path / "demo.git", {"a.txt": "a\n"})
    repos = Repositories(tmp_path)
    before = repos.open("demo")
    repos.close()
    after = repos.open("demo")  # this thread's closed one is not handed out again
    try:
        assert after is not before
        assert repos.read_file("demo", "main", "a.txt").text == "a\n"
    finally:
        after.close()


def test_readers_follow_a_writer_as_its_packs_land_and_are_combined(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One thread commits (a pack each, the small packs combined every few commits) while
    other threads read each new head through their own repositories: every head they see
    is whole, its history and its file, although their stores scanned the packs before the
    packs that hold it existed, and some of the packs they opened were combined away."""
    monkeypatch.setattr(packing, "PACK_LIMIT", 3)
    create_demo_repo(tmp_path / "demo.git", {"n.txt": "0\n"})
    repos = Repositories(tmp_path)
    commits = 40
    done = threading.Event()
    seen: list[set[bytes]] = [set() for _ in range(3)]

    def write() -> None:
        try:
            repo = repos.open("demo")
            head = read_ref(repo, b"refs/heads/main")
            for n in range(1, commits + 1):
                head = commit_changes(
                    repo,
                    "main",
                    {"n.txt": f"{n}\n".encode()},
                    message=f"{n}",
                    author=AUTHOR,
                    expected=head,
                )
        finally:
            done.set()

    def read(mine: set[bytes]) -> None:
        while True:
            finished = done.is_set()
            repo = repos.open("demo")
            head = repos.branch_head("demo", "main")
            history = [entry.commit.id for entry in repo.get_walker([head])]
            text = repos.read_file("demo", "main", "n.txt").text
            # the file was read at the head then or a later one; the history is the head's
            assert int(text) >= len(history) - 1, (text, len(history))
            mine.add(head)
            if finished:
                return

    writer = repos.executor.submit(write)
    readers: list[Future[None]] = [repos.executor.submit(read, mine) for mine in seen]
    try:
        writer.result(timeout=120)
        for reader in readers:
            reader.result(timeout=120)
    finally:
        repos.close()
    assert all(len(mine) >= 1 for mine in seen)
    assert len(set().union(*seen)) > 1  # they read while the writer wrote
    path = tmp_path / "demo.git"
    with Repo(str(path)) as repo:
        assert pack_count(repo.object_store) <= 3
    done_fsck = subprocess.run(
        ["git", "-C", str(path), "fsck", "--full", "--strict"], capture_output=True, text=True
    )
    assert done_fsck.returncode == 0, done_fsck.stderr
    log = subprocess.run(
        ["git", "-C", str(path), "rev-list", "--count", "main"], capture_output=True, text=True
    )
    assert log.stdout.strip() == str(commits + 1)


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


def test_a_repository_beside_its_bare_namesake_is_listed_once(tmp_path: Path) -> None:
    """``x`` and ``x.git`` both present: ``x`` is served, and named once."""
    create_demo_repo(tmp_path / "x", {"a.txt": "plain\n"})
    create_demo_repo(tmp_path / "x.git", {"a.txt": "bare\n"})
    create_demo_repo(tmp_path / "y.git", {"a.txt": "y\n"})
    repos = Repositories(tmp_path)
    try:
        assert repos.names() == ["x", "y"]
        assert repos.read_file("x", "main", "a.txt").text == "plain\n"
    finally:
        repos.close()
