"""The clocks the server relays awareness entries with: increasing across its own restarts.

A stock y-websocket client that reconnects re-sends its awareness state with the clock it
had, and every other client ignores a state whose clock is not newer than the one it holds,
until the client renews it (every 15 s). So the server relays each entry with a clock of its
own: never lower than the last one it relayed for that client, and taken from the wall clock
(microseconds), so that a restarted server's first entry for a client outranks everything its
predecessor relayed. The clients' own clocks still order their entries inside the server.
"""

from __future__ import annotations

import time

__all__ = ["relay_clock"]


def relay_clock(previous: int) -> int:
    """The clock to relay a client's next entry with, after ``previous`` (0: none yet).

    Microseconds since the epoch stay below 2**53 (what a JavaScript number holds exactly)
    until the year 2255; a client's entries would have to change a million times a second to
    run ahead of the wall clock.
    """
    return max(previous + 1, time.time_ns() // 1000)
