"""Fencing tokens on a branch's ref (``gitsync.fence``): a writer whose lease was taken over
is refused, fenced writes exclude each other, and a writer that dies leaves no lock behind."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import run_git
from dulwich.repo import Repo

from gitsync import fence
from gitsync.fence import Fenced, claim, current_fence, fenced
from gitsync.objects.commits import branch_ref, commit_changes, read_ref


def commit(repo: Repo, text: bytes, head: bytes | None) -> bytes:
    return commit_changes(
        repo,
        "main",
        {"file.txt": text},
        message="edit",
        author="A <a@example.com>",
        expected=head,
    )


def test_a_write_under_a_taken_over_lease_is_refused(repo: Repo, repo_path: Path) -> None:
    head = read_ref(repo, branch_ref("main"))
    with fenced(repo, "main", 1):
        head = commit(repo, b"by the first holder\n", head)
    claim(repo, "main", 2)  # the lease moved to another node, which claims the branch
    with pytest.raises(Fenced) as refused, fenced(repo, "main", 1):
        commit(repo, b"late write\n", head)
    assert (refused.value.token, refused.value.seen) == (1, 2)
    assert read_ref(repo, branch_ref("main")) == head  # the ref did not move
    with fenced(repo, "main", 2):
        commit(repo, b"by the new holder\n", head)
    assert current_fence(repo, "main") == 2
    assert run_git(repo_path, "show", "main:file.txt") == "by the new holder\n"
    run_git(repo_path, "fsck", "--full", "--strict")


def test_fences_are_per_branch(repo: Repo) -> None:
    claim(repo, "people/ann-1234abcd", 7)
    with fenced(repo, "main", 1):
        pass
    assert (current_fence(repo, "main"), current_fence(repo, "people/ann-1234abcd")) == (1, 7)


def test_fenced_writes_exclude_each_other(repo: Repo) -> None:
    order: list[str] = []
    inside = threading.Event()

    def first() -> None:
        with fenced(repo, "main", 1):
            order.append("first in")
            inside.set()
            time.sleep(0.3)
            order.append("first out")

    thread = threading.Thread(target=first)
    thread.start()
    inside.wait(5)
    with fenced(repo, "main", 2):
        order.append("second in")
    thread.join()
    assert order == ["first in", "first out", "second in"]


def test_a_holder_killed_mid_write_leaves_no_lock(repo: Repo, repo_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from gitsync.fence import fenced\n"
            f"with fenced({str(repo_path)!r}, 'main', 3):\n"
            "    print('held', flush=True)\n"
            "    time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline() == "held\n"
    holder.kill()
    holder.wait()
    holder.stdout.close()
    started = time.monotonic()
    # the dead holder's claim stands; its lock does not
    with pytest.raises(Fenced), fenced(repo, "main", 2):
        pass
    with fenced(repo, "main", 4):
        pass
    assert time.monotonic() - started < 5


def test_a_holder_that_does_not_go_on_keeps_the_others_waiting_a_bounded_time(
    repo: Repo, repo_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A holder alive but stopped (SIGSTOP, a frozen machine) keeps its lock: another
    write waits ``FENCE_WAIT`` at most, then fails with ``FenceBusy`` (it tied up its
    thread for as long as the holder stayed stopped), and goes through once the holder
    has gone on."""
    monkeypatch.setattr(fence, "FENCE_WAIT", 0.3)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys\n"
            "from gitsync.fence import fenced\n"
            f"with fenced({str(repo_path)!r}, 'main', 3):\n"
            "    print('held', flush=True)\n"
            "    sys.stdin.readline()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdin is not None and holder.stdout is not None
    try:
        assert holder.stdout.readline() == "held\n"
        started = time.monotonic()
        with pytest.raises(fence.FenceBusy), fenced(repo, "main", 4):
            pass
        assert time.monotonic() - started < 2
    finally:
        holder.stdin.write("go on\n")
        holder.stdin.close()
        holder.wait()
        holder.stdout.close()
    with fenced(repo, "main", 4):
        pass
    assert current_fence(repo, "main") == 4
