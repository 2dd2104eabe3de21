"""Waiting for a save under way (``cmd > file`` on a slow disk, a formatter streaming its
output), which the syncer takes once it is written whole rather than chunk by chunk (each
chunk merged with live edits as if it were the whole file). Whether a program writes the file
is told by a lease (see :mod:`.leases`); where it cannot be, the syncer relies on its other
guards (a save that goes on writing into a file a write replaced is put back and merged)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from .files import Stamp, read_whole
from .leases import being_written

__all__ = ["read_when_written", "writers_done"]

POLL = 0.05  # seconds between two looks at a file being written


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
