"""Giving freed memory back to the operating system after a large document unloads."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
from collections.abc import Callable

__all__ = ["release_free_memory"]

log = logging.getLogger("collab.memory")


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or ``None`` where the C library has none."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_TRIM = _malloc_trim()


def release_free_memory() -> None:
    """Return the C heap's free pages to the system.

    A document of megabytes is many allocations of the CRDT core and of Python; once it is
    freed, glibc keeps the pages for reuse, and a server that served one large document once
    would keep its peak size for good. ``malloc_trim`` gives back every whole free page (a
    few milliseconds for a heap of a hundred megabytes). Elsewhere this does nothing.

    A full garbage collection comes first, so that what only reference cycles hold is freed
    now rather than at the next full collection, which ``collab serve`` makes rare. It takes
    tens of milliseconds on a busy server; rooms large enough to call this unload rarely.
    """
    gc.collect()  # what only cycles keep (a room's own references among them) first
    if _TRIM is not None:
        _TRIM(0)
