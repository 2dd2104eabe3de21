"""Fencing tokens for a branch's ref: a writer that lost its lease cannot move the ref.

In a cluster, one node at a time holds a branch's lease and makes its commits; each grant of
the lease carries a larger token. The repository keeps the largest token it has seen for the
branch (``<git dir>/collab/fences/<branch>``). A fenced write holds an exclusive lock on
that file while it moves the ref: it is refused if the file holds a larger token than its
own, and raises the file to its own otherwise. A node that takes the lease over ``claim``\\ s
the branch at once, so that the previous holder's late writes are refused from then on.

The lock is ``flock`` on the file itself: the kernel releases it when its holder dies, so a
crash leaves nothing to clean up. The repositories' directory must therefore be on a file
system whose locks every node sees (a local disk, or NFS v4 with its locks). A holder that
is alive but does not go on (a process stopped, a machine frozen) keeps it: the others wait
for it ``FENCE_WAIT`` seconds at most, then fail their write (``FenceBusy``) and try again
later, rather than tie up a thread each for as long as it lasts. So a writer holds the fence
for its ref moves and their records alone: a commit's objects are written, and fsynced,
before (``gitsync.objects.commits.write_commit``), and its small packs combined after. A
writer stopped while it writes them holds nothing: another node takes the lease once it
expires and commits. Only one stopped inside that small block holds the branch up.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from dulwich.repo import Repo

from .repos import make_dirs_within

__all__ = ["FENCE_WAIT", "FenceBusy", "Fenced", "claim", "current_fence", "fence_path", "fenced"]

FENCE_WAIT = 10.0
"""Seconds a write waits for another's hold of a branch's fence before it fails."""


class FenceBusy(TimeoutError):
    """Another writer held the branch's fence for longer than ``FENCE_WAIT``."""


class Fenced(RuntimeError):
    """A write with a token older than one the branch has seen."""

    def __init__(self, branch: str, token: int, seen: int) -> None:
        super().__init__(
            f"branch {branch!r}: the write's lease (token {token}) was taken over "
            f"(token {seen}); it is refused"
        )
        self.branch = branch
        self.token = token
        self.seen = seen


def fence_path(repo: Repo | Path, branch: str) -> Path:
    return _controldir(repo) / "collab" / "fences" / branch


def _controldir(repo: Repo | Path) -> Path:
    return Path(repo.controldir()) if isinstance(repo, Repo) else Path(repo)


@contextlib.contextmanager
def _locked(repo: Repo | Path, branch: str) -> Iterator[int]:
    path = fence_path(repo, branch)
    make_dirs_within(_controldir(repo), path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + FENCE_WAIT
        pause = 0.001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise FenceBusy(
                        f"branch {branch!r}: another writer has held its fence for "
                        f"{FENCE_WAIT:g} s (a node stopped in the middle of a commit?)"
                    ) from None
                time.sleep(pause)
                pause = min(pause * 2, 0.05)
        yield fd
    finally:
        os.close(fd)  # releases the lock


def _read(fd: int) -> int:
    raw = os.pread(fd, 64, 0).strip()
    return int(raw) if raw else 0


def _raise_to(fd: int, token: int) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, b"%d\n" % token, 0)
    os.fsync(fd)


def current_fence(repo: Repo | Path, branch: str) -> int:
    """The largest token the branch has seen (0: none yet)."""
    with _locked(repo, branch) as fd:
        return _read(fd)


def claim(repo: Repo | Path, branch: str, token: int) -> None:
    """Raise the branch's fence to ``token`` (a new lease holder does this first); a token
    older than the fence is refused."""
    with fenced(repo, branch, token):
        pass


@contextlib.contextmanager
def fenced(repo: Repo | Path, branch: str, token: int) -> Iterator[None]:
    """Hold the branch's fence for a write made under lease ``token``: ``Fenced`` if a newer
    lease has been seen; otherwise no other fenced write runs until this block ends."""
    with _locked(repo, branch) as fd:
        seen = _read(fd)
        if seen > token:
            raise Fenced(branch, token, seen)
        if seen < token:
            _raise_to(fd, token)
        yield
