"""The files the syncer's writes replaced, held open: a program that was writing one in place
when a write was renamed over it (a slow save, ``cmd > file``) goes on writing into the
replaced file, where nobody would ever read it. What it writes there is handed back once no
program writes it, for the syncer to put back and merge like any save that came late."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

from .leases import open_for_writing

__all__ = ["POLL", "Replaced", "ReplacedFiles"]

log = logging.getLogger("collab.disk")

POLL = 0.02
"""Seconds between two looks at the replaced files."""


@dataclass(slots=True)
class Replaced:
    """A file a write replaced, still open: ``data`` is what it held when the write checked
    it, ``stamp`` its size and modification time then."""

    handle: BinaryIO
    data: bytes
    stamp: tuple[int, int]

    def being_written(self) -> bool:
        """Whether some program holds the file open for writing (see :mod:`.leases`)."""
        return open_for_writing(self.handle.fileno())

    def now(self) -> tuple[int, int]:
        status = os.fstat(self.handle.fileno())
        return status.st_size, status.st_mtime_ns

    def read(self) -> bytes:
        self.handle.seek(0)
        return self.handle.read()

    def close(self) -> None:
        self.handle.close()


@dataclass(slots=True)
class _Held:
    path: str
    replaced: Replaced
    until: float
    seen: tuple[int, int]
    written: bool = field(default=False)


class ReplacedFiles:
    """Replaced files, each looked at every :data:`POLL` seconds for as long as some program
    holds it open for writing, and ``hold`` seconds more (from its last change; where who
    writes it cannot be told, ``hold`` seconds from its last change). Once one was written to,
    is quiet, and no program writes it, ``late(path, data, before)`` is called with what it
    holds and what it held when it was replaced. At most ``limit`` are held (beyond, a
    replaced file is closed at once)."""

    def __init__(
        self, late: Callable[[str, bytes, bytes], None], *, hold: float, limit: int = 64
    ) -> None:
        self.late = late
        self.hold = hold
        self.limit = limit
        self._held: list[_Held] = []
        self._task: asyncio.Task[None] | None = None

    def add(self, path: str, replaced: Replaced) -> None:
        if len(self._held) >= self.limit:
            replaced.close()
            return
        until = asyncio.get_running_loop().time() + self.hold
        self._held.append(_Held(path, replaced, until, replaced.stamp))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._held:
            await asyncio.sleep(POLL)
            now = loop.time()
            for held in list(self._held):
                if not self._look(held, now):
                    self._held.remove(held)
                    held.replaced.close()

    def _look(self, held: _Held, now: float) -> bool:
        """Look at one replaced file; False once it is to be let go."""
        stamp = held.replaced.now()
        if stamp != held.seen:  # being written to: look again once it is quiet
            held.seen, held.written, held.until = stamp, True, now + self.hold
            return True
        if held.replaced.being_written():  # (a pause in a save: more may come)
            held.until = now + self.hold
            return True
        if held.written:
            held.written = False
            data = held.replaced.read()
            if data != held.replaced.data:
                try:
                    self.late(held.path, data, held.replaced.data)
                except Exception:
                    log.exception("%s: putting a late save back failed", held.path)
        return now < held.until

    async def close(self) -> None:
        """Let every replaced file go (what is written to them from now on is not seen)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for held in self._held:
            held.replaced.close()
        self._held.clear()
