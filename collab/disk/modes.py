"""A file's executable bit, as git keeps it: mode ``100755`` or ``100644``; and symbolic
links, mode ``120000``, whose blob is the link's target.

On disk a file is executable when its owner may execute it (as git reads it); made
executable, it may be executed by whoever may read it, and made plain, by no one (as
``git checkout`` writes it)."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

__all__ = [
    "EXECUTABLE",
    "LINK",
    "REGULAR",
    "disk_mode",
    "link_target",
    "set_disk_mode",
    "write_link",
]

EXECUTABLE = "100755"
REGULAR = "100644"
LINK = "120000"


def disk_mode(path: Path) -> str | None:
    """The git mode of the regular file at ``path``; ``None`` if there is none there."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return EXECUTABLE if st.st_mode & stat.S_IXUSR else REGULAR


def set_disk_mode(path: Path, mode: str) -> bool:
    """Make the file at ``path`` executable or not, as ``mode`` says; whether it changed."""
    try:
        current = stat.S_IMODE(os.lstat(path).st_mode)
    except OSError:
        return False
    executable = current | ((current & 0o444) >> 2) | stat.S_IXUSR  # x wherever r
    wanted = executable if mode == EXECUTABLE else current & ~0o111
    if wanted == current:
        return False
    os.chmod(path, wanted)
    return True


def link_target(path: Path) -> bytes | None:
    """The target of the symbolic link at ``path``, as git keeps it; ``None`` if it is none."""
    try:
        return os.fsencode(os.readlink(path))
    except OSError:
        return None


def write_link(path: Path, target: bytes) -> None:
    """Make ``path`` a symbolic link to ``target``, in one rename (over what was there)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.collab-link-{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temp)
    os.symlink(os.fsdecode(target), temp)
    try:
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
