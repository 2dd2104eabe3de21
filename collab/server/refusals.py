"""Repeated refusals of one stock client, answered more and more slowly.

A stock y-websocket provider opens a new connection 100 ms after any connection that opened
has closed, whatever its close code: a page refused for good (no access, no such branch, a
bad name, an expired token) comes back ten times a second for as long as it is open, each
time a WebSocket handshake, an authentication and a log line here. So the first refusal of a
(peer address, room, code) is closed at once, with its code and reason; each of the same
within :data:`WINDOW` seconds of the last is closed after a delay that doubles, from
:data:`FIRST_DELAY` up to :data:`MAX_DELAY`, and logged only at the 1st, 2nd, 4th, 8th... of
a row. A delay holds the socket open with nothing served on it; past :data:`MAX_HELD` such
sockets at once, refusals close at once again (a client opening many cannot hold the server's
sockets with them).
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass

__all__ = ["FIRST_DELAY", "MAX_DELAY", "MAX_HELD", "WINDOW", "Refusal", "Refusals"]

FIRST_DELAY = 0.5
"""Seconds the second refusal in a row waits before its close."""
MAX_DELAY = 5.0
"""The longest wait before a close."""
WINDOW = 60.0
"""Seconds without the same refusal after which it counts as a first again."""
MAX_HELD = 1024
"""Refused sockets held open at once, at most."""
MAX_KNOWN = 4096
"""Refusals remembered, the least recent forgotten first."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """One refusal: the how-many-th of its row, and how long to wait before closing."""

    count: int
    delay: float

    @property
    def logged(self) -> bool:
        """Whether it is worth a log line: the 1st, 2nd, 4th, 8th... of a row."""
        return self.count & (self.count - 1) == 0


class Refusals:
    """The recent refusals of one endpoint, by (peer address, room, code)."""

    def __init__(self) -> None:
        # key -> (refusals in a row, when the last one was); most recent last
        self._known: collections.OrderedDict[tuple[str, str, int], tuple[int, float]] = (
            collections.OrderedDict()
        )
        self._held = 0

    def note(self, remote: str | None, room: str, code: int) -> Refusal:
        """Count a refusal; say how long to wait before closing its socket."""
        key = (remote or "", room, code)
        now = time.monotonic()
        count, last = self._known.pop(key, (0, now))
        count = count + 1 if now - last < WINDOW else 1
        self._known[key] = (count, now)
        if len(self._known) > MAX_KNOWN:
            self._known.popitem(last=False)
        delay = 0.0 if count == 1 else min(FIRST_DELAY * 2 ** (count - 2), MAX_DELAY)
        return Refusal(count, delay)

    async def wait(self, refusal: Refusal) -> None:
        """Wait ``refusal.delay`` seconds, unless :data:`MAX_HELD` sockets wait already."""
        if refusal.delay <= 0 or self._held >= MAX_HELD:
            return
        self._held += 1
        try:
            await asyncio.sleep(refusal.delay)
        finally:
            self._held -= 1
