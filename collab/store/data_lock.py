"""One process at a time in a directory (data, repositories): a lock the kernel drops on exit."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

__all__ = ["DataDirBusy", "DataDirLock"]

LOCK_FILE = "lock"


class DataDirBusy(RuntimeError):
    """Another process (a server, a store repair) holds the directory."""


class DataDirLock:
    """An exclusive ``flock`` on ``<data_dir>/<name>``, holding the owner's pid.

    A crash cannot leave it behind: the kernel releases it with the process, so a server
    restarted at once after ``kill -9`` takes it straight away."""

    def __init__(
        self,
        data_dir: Path,
        name: str = LOCK_FILE,
        remedy: str = "stop it first, or give this one another directory",
        subject: Path | None = None,
    ) -> None:
        self.path = Path(data_dir) / name
        self.remedy = remedy  # what to do when another process holds it
        self.subject = subject or self.path.parent  # the directory a refusal names
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock; raise ``DataDirBusy`` naming the holder if another process has it."""
        if self._fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise DataDirBusy(
                f"{self.subject} is in use by another collab process (pid {holder}); {self.remedy}"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the descriptor drops the lock

    def __enter__(self) -> DataDirLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
