"""Whether some program holds a file open for writing: a save under way (``cmd > file`` on a
slow disk, a formatter streaming its output), in the file at a path or in a file the syncer
holds open (one its write replaced).

Linux answers through a lease: a read lease (``F_SETLEASE``) cannot be taken on a file that
any process holds open for writing. When it can, it is let go at once. A process holding a
lease is sent SIGIO when another opens the file for writing meanwhile, and SIGIO's default
action ends the process; so the check is made only while SIGIO is ignored or handled
(:func:`allow_lease_checks` ignores it where it has its default action). Elsewhere (other
systems, filesystems without leases, files owned by another user) the answer is no, and the
syncer relies on its other guards."""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import threading
from pathlib import Path

__all__ = ["allow_lease_checks", "being_written", "open_for_writing"]

_SETLEASE = getattr(fcntl, "F_SETLEASE", None)
_SIGIO = getattr(signal, "SIGIO", None)


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
        return open_for_writing(fd)
    finally:
        os.close(fd)


def open_for_writing(fd: int) -> bool:
    """Whether a process holds the file that ``fd`` (open read-only) is open for writing,
    at a path or not (one a rename replaced); False where that cannot be told."""
    if _SETLEASE is None or not _checks_safe():
        return False
    try:
        fcntl.fcntl(fd, _SETLEASE, fcntl.F_RDLCK)
    except OSError as exc:
        return exc.errno == errno.EAGAIN  # else no leases here, or not the file's owner
    fcntl.fcntl(fd, _SETLEASE, fcntl.F_UNLCK)
    return False
