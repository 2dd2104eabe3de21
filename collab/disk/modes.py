"""A file's executable bit, as git keeps it: mode ``100755`` or ``100644``.

On disk a file is executable when its owner may execute it (as git reads it); made
executable, it may be executed by whoever may read it, and made plain, by no one (as
``git checkout`` writes it)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["EXECUTABLE", "REGULAR", "disk_mode", "set_disk_mode"]

EXECUTABLE = "100755"
REGULAR = "100644"


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
