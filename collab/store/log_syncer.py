"""``LogSyncer``: makes an append-only file durable on a thread of its own, one fsync for many
waiters."""

from __future__ import annotations

import logging
import math
import os
import pathlib
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["LogSyncer"]

log = logging.getLogger("collab.store")

T = TypeVar("T")


class LogSyncer(Generic[T]):
    """Fdatasyncs ``path`` behind a writer, and releases waiters in groups.

    The writer reports each write to the file once it has returned (:meth:`wrote`); a
    waiter asks to be released once the first ``after`` writes are durable (:meth:`wait`).
    Waiters are released by ``release(waiters, error)`` on this object's thread, after an
    fdatasync that started once their writes had returned. One fsync serves every waiter
    whose writes are done, and fsyncs start at least ``window`` apart: a waiter that comes
    after a quiet spell is synced at once, and those that come within ``window`` of the last
    fsync's start wait for the next one, together (at 0, waiters whose writes return during
    an fsync share the next one). So edits that come often share fsyncs, and a lone one
    costs one wake-up of this thread, not two, and no wait. Only the writer and the disk
    hold it up: a waiter never makes a write wait.

    An fsync that fails (the file missing, too) fails its waiters and every later one (the
    kernel may have dropped the pages it could not write); ``error`` is ``None`` otherwise.
    Once the thread has ended, waiters still waiting and new ones are failed.
    """

    def __init__(
        self,
        path: pathlib.Path,
        *,
        window: float,
        release: Callable[[list[T], BaseException | None], None],
        name: str,
        observe: Callable[[float], None] | None = None,
        after_sync: Callable[[], None] | None = None,
    ) -> None:
        self.path = path
        self.window = window
        self.syncs = 0
        """Number of fdatasyncs made."""
        self._observe = observe  # called with each fdatasync's seconds
        self._after_sync = after_sync  # called on this thread after each fdatasync's release
        self._release = release
        self._cond = threading.Condition()
        self._waiting: list[tuple[int, T]] = []  # (after, waiter), in call order
        self._written = 0  # writes returned
        self._synced = 0  # writes made durable
        self._last_start = -math.inf  # when the last fdatasync started (monotonic)
        self._idle = False  # the thread waits for a waiter whose writes are done
        self._stopping = False
        self._closed = False  # the thread has ended: waiters are failed at once
        self._failed: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @property
    def error(self) -> BaseException | None:
        """The fsync error that fails every waiter from now on (``None``: none failed)."""
        return self._failed

    def start(self) -> None:
        self._thread.start()

    def wrote(self, count: int) -> None:
        """``count`` more writes have returned (from the writer's thread)."""
        with self._cond:
            self._written += count
            if self._idle and self._waiting and self._waiting[0][0] <= self._written:
                self._cond.notify()

    def wait(self, after: int, waiter: T) -> None:
        """Release ``waiter`` once the first ``after`` writes are durable."""
        with self._cond:
            closed = self._closed
            if not closed:
                self._waiting.append((after, waiter))
                if self._idle and after <= self._written:
                    self._cond.notify()
        if closed:
            self._release([waiter], self._failed or RuntimeError("the syncer has stopped"))

    def stop(self) -> None:
        """Sync and release every waiter whose writes are done, without waiting for a
        window, fail the others, then stop the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join()

    def _ready(self) -> bool:
        return bool(self._waiting) and self._waiting[0][0] <= self._written

    def _take(self) -> int | None:
        """Wait for waiters whose writes are done, and for the window after the last fsync's
        start; the number of writes the next fsync covers, or ``None`` once stopped."""
        with self._cond:
            while not self._ready() and not self._stopping:
                self._idle = True
                self._cond.wait()
                self._idle = False
            if not self._ready():
                return None
            deadline = self._last_start + self.window
            while not self._stopping and (remaining := deadline - time.monotonic()) > 0:
                self._cond.wait(remaining)
            return self._written

    def _run(self) -> None:
        fd: int | None = None
        try:
            while (covered := self._take()) is not None:
                error = self._failed
                if error is None and covered > self._synced:
                    try:
                        if fd is None:
                            fd = os.open(self.path, os.O_RDONLY)
                        self._last_start = time.monotonic()
                        started = time.perf_counter()
                        os.fdatasync(fd)
                        self.syncs += 1
                    except BaseException as exc:
                        log.error("store: fsync of %s failed: %s", self.path, exc)
                        self._failed = error = exc
                    else:
                        if self._observe is not None:
                            self._observe(time.perf_counter() - started)
                    self._synced = covered
                with self._cond:
                    split = 0
                    while split < len(self._waiting) and self._waiting[split][0] <= covered:
                        split += 1
                    group = [waiter for _after, waiter in self._waiting[:split]]
                    del self._waiting[:split]
                self._release(group, error)
                if error is None and self._after_sync is not None:
                    self._after_sync()
        finally:
            if fd is not None:
                os.close(fd)
            with self._cond:  # stopped (or broken): nothing more will be made durable here
                self._closed = True
                group = [waiter for _after, waiter in self._waiting]
                self._waiting.clear()
            if group:
                self._release(group, self._failed or RuntimeError("the syncer stopped first"))
