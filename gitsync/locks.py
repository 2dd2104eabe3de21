"""Lock files left by a crash: finding them, removing them, and retrying a ref write past them.

Git and dulwich take a lock on a ref by creating ``<file>.lock`` with ``O_EXCL`` and release it
by renaming it over the file. A process killed in between leaves the lock behind, and every
later write of that ref fails. A lock is held for milliseconds, so one older than a few
seconds is taken to be left over and removed; a younger one is waited for.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from dulwich.file import FileLocked
from dulwich.repo import Repo

__all__ = [
    "LOCK_WAIT",
    "STALE_AFTER",
    "RefLocked",
    "call_past_stale_locks",
    "recover_stale_locks",
    "remove_stale_lock",
]

STALE_AFTER = 5.0
"""Seconds after which a lock file is taken to be left over by a crash."""
LOCK_WAIT = 2.0
"""Seconds to wait for a young lock to be released before giving up."""

T = TypeVar("T")


class RefLocked(RuntimeError):
    """A lock file is held (younger than the stale age) and was not released in time."""

    def __init__(self, lock: Path, age: float) -> None:
        super().__init__(f"{lock} is locked by another writer ({age:.1f} s old)")
        self.lock = lock
        self.age = age


def _age(path: Path) -> tuple[float, int] | None:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return None
    return time.time() - st.st_mtime, st.st_ino


def remove_stale_lock(lock: Path, older_than: float = STALE_AFTER) -> bool:
    """Remove ``lock`` if it is older than ``older_than`` seconds; return whether it was.

    The lock is renamed aside before it is removed, and put back if what was renamed turns
    out not to be the stale file (its owner released it and a new writer took it meanwhile).
    """
    seen = _age(lock)
    if seen is None or seen[0] < older_than:
        return False
    aside = lock.with_name(f"{lock.name}.stale-{uuid.uuid4().hex}")
    try:
        os.rename(lock, aside)
    except FileNotFoundError:
        return False
    moved = _age(aside)
    if moved is None:
        return False
    if moved[1] != seen[1]:
        with contextlib.suppress(FileExistsError):
            os.link(aside, lock)
        os.unlink(aside)
        return False
    os.unlink(aside)
    return True


def recover_stale_locks(repo: Repo, older_than: float = STALE_AFTER) -> list[Path]:
    """Remove the lock files in ``repo`` older than ``older_than`` seconds; return their paths.

    Looks at the top of the git directory (``packed-refs.lock``, ``HEAD.lock``, ...), under
    ``refs/``, in the loose object directories and in the pack directory (the lock of a
    combination of packs).
    """
    root = Path(repo.controldir())
    candidates = list(root.glob("*.lock"))
    candidates += (root / "refs").rglob("*.lock")
    candidates += (root / "objects").glob("??/*.lock")
    candidates += (root / "objects" / "pack").glob("*.lock")
    return [lock for lock in sorted(candidates) if remove_stale_lock(lock, older_than)]


def call_past_stale_locks(
    operation: Callable[[], T], *, stale_after: float = STALE_AFTER, wait: float = LOCK_WAIT
) -> T:
    """Run ``operation`` (a dulwich ref write), getting past the lock files in its way.

    A lock older than ``stale_after`` is removed and the operation retried once; a younger one
    is polled for up to ``wait`` seconds, then :class:`RefLocked` is raised.

    dulwich removes a ref's parent directories once they are empty, so a write that creates
    its directory and then its lock file can find the directory gone (another thread deleted
    the last ref beside it in between): that write is retried, and creates it again.
    """
    deadline = time.monotonic() + wait
    recovered = False
    pause = 0.001
    while True:
        try:
            return operation()
        except FileNotFoundError:
            if time.monotonic() >= deadline:
                raise
            continue  # the directory was pruned under the write: it is made again
        except FileLocked as exc:
            lock = Path(os.fsdecode(exc.lockfilename))
        seen = _age(lock)
        age = 0.0 if seen is None else seen[0]
        if seen is None and time.monotonic() < deadline:
            continue  # released between the attempt and the look
        if age >= stale_after and not recovered:
            remove_stale_lock(lock, stale_after)
            recovered = True
            continue
        if time.monotonic() >= deadline:
            raise RefLocked(lock, age)
        time.sleep(pause)
        pause = min(pause * 2, 0.05)
