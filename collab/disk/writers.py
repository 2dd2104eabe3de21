"""Whether some program holds a file open for writing: a save under way (``cmd > file`` on a
slow disk, a formatter streaming its output), which the syncer takes once it is written whole
rather than chunk by chunk (each chunk merged with live edits as if it were the whole file).

Linux answers through a lease: a read lease (``F_SETLEASE``) cannot be taken on a file that
any process holds open for writing. When it can, it is let go at once. A process holding a
lease is sent SIGIO when another opens the file for writing meanwhile, and SIGIO's default
action ends the process; so the check is made only while SIGIO is ignored or handled
(:func:`allow_lease_checks` ignores it where it has its default action). Elsewhere (other
systems, filesystems without leases, files owned by another user) the answer is no, and the
syncer relies on its other guards (a save that goes on writing into a file a write replaced
is put back and merged)."""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import signal
import threading
from pathlib import Path

from .files import Stamp, read_whole

__all__ = ["allow_lease_checks", "being_written", "read_when_written", "writers_done"]

_SETLEASE = getattr(fcntl, "F_SETLEASE", None)
_SIGIO = getattr(signal, "SIGIO", None)
POLL = 0.05  # seconds between two looks at a file being written


def allow_lease_checks() -> bool:
    """Ignore SIGIO if it has its default action (which would end the process on a lease
    break) and this is the main thread (the only one that may set it); whether
    :func:`being_written` can answer."""
    if _SETLEASE is None or _SIGIO is None:
        return False
    if signal.getsignal(_SIGIO) == signal.SIG_DFL and (
        threading.current_thread() is threading.main_thread()
    ):
        signal.signal(_SIGIO, signal.SIG_IGN)
    return _checks_safe()


def _checks_safe() -> bool:
    return _SIGIO is not None and signal.getsignal(_SIGIO) not in (signal.SIG_DFL, None)


def being_written(path: Path) -> bool:
    """Whether a process holds ``path`` open for writing (False where that cannot be told)."""
    if _SETLEASE is None or not _checks_safe():
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False  # gone, a link, a folder, unreadable: nothing to wait for
    try:
        fcntl.fcntl(fd, _SETLEASE, fcntl.F_RDLCK)
    except OSError as exc:
        return exc.errno == errno.EAGAIN  # else no leases here, or not the file's owner
    else:
        fcntl.fcntl(fd, _SETLEASE, fcntl.F_UNLCK)
        return False
    finally:
        os.close(fd)


async def writers_done(path: Path, limit: float, stop: asyncio.Event) -> bool:
    """Wait until no process holds ``path`` open for writing, ``limit`` seconds at most
    (a program that keeps it open for good, a log, is then taken as it is) or until
    ``stop`` is set; whether no process holds it so now."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while being_written(path):
        if loop.time() >= deadline or stop.is_set():
            return False
        await asyncio.sleep(POLL)
    return True


async def read_when_written(
    path: Path, limit: float, stop: asyncio.Event
) -> tuple[bytes | None, Stamp | None] | None:
    """``path``'s content and stamp once no process writes it (see :func:`writers_done`);
    ``None``, after a pause, if a save went on while it was read (the file changed, or a
    process opened it for writing): read it again."""
    quiet = await writers_done(path, limit, stop)
    read = read_whole(path)
    if read is None or (quiet and being_written(path)):
        await asyncio.sleep(POLL)
        return None
    return read
