"""``Turns``: the frames of one connection that arrive together do not hold the event loop.

aiohttp hands a reader every frame it has parsed without a turn of the event loop in between:
a peer that sends hundreds of frames at once (or a few that are costly to apply) would have
them all handled before any other connection's frame, timer or write. A reader asks
:meth:`Turns.due` after each frame, and gives the loop a turn (``await asyncio.sleep(0)``)
when it says so: after :data:`FRAMES_PER_TURN` frames, or once the frames handled since the
last turn took :data:`SECONDS_PER_TURN`. A peer whose frames come one at a time costs one
extra turn in ``FRAMES_PER_TURN`` frames.
"""

from __future__ import annotations

import time

__all__ = ["FRAMES_PER_TURN", "SECONDS_PER_TURN", "Turns"]

FRAMES_PER_TURN = 16
SECONDS_PER_TURN = 0.002


class Turns:
    """When one connection's reader should let the others have the event loop."""

    __slots__ = ("_frames", "_spent")

    def __init__(self) -> None:
        self._frames = 0
        self._spent = 0.0

    def due(self, started: float) -> bool:
        """A frame was handled from ``started`` (``time.perf_counter()``) until now: whether
        the loop is to be given a turn before the next one."""
        self._frames += 1
        self._spent += time.perf_counter() - started
        if self._frames < FRAMES_PER_TURN and self._spent < SECONDS_PER_TURN:
            return False
        self._frames = 0
        self._spent = 0.0
        return True
