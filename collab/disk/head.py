"""What a working tree has checked out, told from ``.git/HEAD`` without running git: the
syncer keeps one branch in sync, and the files of another branch, or of an older commit,
checked out in the tree (``git switch``, ``git checkout HEAD~2``, a rebase under way) are not
edits of it. A checkout writes the files under git's lock on the index, and moves HEAD once
they are written: a file it changed is looked at once the lock is gone."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

__all__ = ["GIT_LIMIT", "HeadWatch", "checked_out", "shown"]

GIT_LIMIT = 10.0
"""Seconds a git command holding the index (``.git/index.lock``) is waited for; one that
holds it longer (``git commit -a`` with its editor open, a lock a crash left) is waited for
once, not again."""
POLL = 0.02  # seconds between two looks at the lock


def checked_out(root: Path) -> str | None:
    """The ref HEAD names (``refs/heads/main``); ``None`` where a commit is checked out (a
    detached HEAD) or HEAD cannot be read."""
    try:
        text = (root / ".git" / "HEAD").read_text("utf-8", "replace").strip()
    except OSError:
        return None
    return text.removeprefix("ref:").strip() if text.startswith("ref:") else None


def shown(ref: str | None) -> str:
    """``ref`` as a person reads it: a branch's name, or ``a detached HEAD``."""
    return "a detached HEAD" if ref is None else ref.removeprefix("refs/heads/")


class HeadWatch:
    """Whether ``root`` has ``branch`` checked out, once no git command holds its index."""

    def __init__(self, root: Path, branch: str) -> None:
        self.root = root
        self.ref = f"refs/heads/{branch}"
        self._lock = root / ".git" / "index.lock"
        self._waited: tuple[int, int] | None = None  # the lock waited out (inode, mtime)

    def on_branch(self) -> bool:
        """Whether HEAD names the branch now (a checkout may be under way)."""
        return checked_out(self.root) == self.ref

    def git_at_work(self) -> bool:
        """Whether a git command holds the index now (not one already waited out)."""
        stamp = self._lock_stamp()
        return stamp is not None and stamp != self._waited

    async def settled(self, stop: asyncio.Event) -> str | None:
        """What HEAD names once no git command holds the index (see :data:`GIT_LIMIT`), or
        at once if ``stop`` is set."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + GIT_LIMIT
        waited = False
        while self.git_at_work() and not stop.is_set():
            if loop.time() >= deadline:
                self._waited = self._lock_stamp()
                break
            waited = True
            await asyncio.sleep(POLL)
        if waited:  # (a checkout moves HEAD just after it lets the index go)
            await asyncio.sleep(POLL)
        return checked_out(self.root)

    def _lock_stamp(self) -> tuple[int, int] | None:
        try:
            status = os.stat(self._lock)
        except OSError:
            return None
        return status.st_ino, status.st_mtime_ns
