"""Renames that cannot clobber a file created or saved at the same moment: Linux's
``renameat2`` with ``RENAME_EXCHANGE`` (swap two names in one step) and ``RENAME_NOREPLACE``
(fail if the target exists).

A check of a file's content followed by ``os.replace`` leaves a window in which an editor's
save (a rename of its own, or a write in place) is overwritten and lost. Swapping instead
leaves the file that was there under the temporary name, where it can be checked after the
fact and swapped back. Where the system or the file system has no such renames (other
systems, some network file systems) the functions say so, and the caller falls back to
check-then-replace.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import cast

__all__ = ["exchange", "rename_new"]

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2
_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP}


def _load() -> Callable[[int, bytes, int, bytes, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):  # a C library without it (glibc before 2.28)
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p]
    function.argtypes += [ctypes.c_uint]
    function.restype = ctypes.c_int
    return cast("Callable[[int, bytes, int, bytes, int], int]", function)


_renameat2 = _load()
_works = {_RENAME_NOREPLACE: True, _RENAME_EXCHANGE: True}  # until a file system says not


def _rename(source: Path, target: Path, flags: int) -> bool:
    """``renameat2(source, target, flags)``; False where it is not supported (nothing was
    renamed), an ``OSError`` for any other failure."""
    if _renameat2 is None or not _works[flags]:
        return False
    result = _renameat2(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), flags)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in _UNSUPPORTED:
        # (EINVAL also answers a flag a file system lacks: tried again on the next call,
        # since another file system may have it; remembered only for ENOSYS)
        if code == errno.ENOSYS:
            _works[flags] = False
        return False
    raise OSError(code, os.strerror(code), os.fspath(source), None, os.fspath(target))


def exchange(first: Path, second: Path) -> bool:
    """Swap the files named ``first`` and ``second``, both of which must exist, in one step;
    False if this system or file system cannot (nothing changed)."""
    return _rename(first, second, _RENAME_EXCHANGE)


def rename_new(source: Path, target: Path) -> bool:
    """Rename ``source`` to ``target`` unless ``target`` exists (then ``FileExistsError``),
    in one step; False if this system or file system cannot (nothing changed)."""
    return _rename(source, target, _RENAME_NOREPLACE)
