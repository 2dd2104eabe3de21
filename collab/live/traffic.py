"""``Traffic``: what one endpoint's connections exchanged and refused, in plain counters."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Protocol

from aiohttp import WSCloseCode

from protocol.errors import ErrorCode

__all__ = ["SendQueue", "Traffic", "frame_error_code", "read_failed"]


class SendQueue(Protocol):
    """What the counters read of an open connection's send queue (an ``Outbox``)."""

    @property
    def queued(self) -> int:
        """Frames waiting to be sent."""
        ...

    @property
    def queued_bytes(self) -> int:
        """Payload bytes waiting to be sent."""
        ...


class Traffic:
    """The counters of one endpoint (``/ws``, ``/yjs``, ``/worker``, ``/api``).

    They are plain integers, changed on the event loop only: counting an update costs one
    attribute increment, and ``GET /metrics`` reads them when it is scraped. The send queues
    of the endpoint's open connections are in ``open`` (each adds itself while its sender
    runs), so their number and depths are read at scrape time too.
    """

    __slots__ = (
        "bytes_in",
        "bytes_out",
        "endpoint",
        "open",
        "refusals",
        "updates_in",
        "updates_out",
    )

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.updates_in = 0
        """CRDT updates accepted from peers."""
        self.bytes_in = 0
        """Bytes of the messages received (WebSocket payloads)."""
        self.updates_out = 0
        """CRDT updates handed to peers (a peer that is behind may get several merged)."""
        self.bytes_out = 0
        """Bytes written to the sockets (WebSocket frames, headers included)."""
        self.refusals: Counter[tuple[str, int]] = Counter()
        """``(kind, code)``: connections closed with an error code (``"close"``) and errors
        answered to a message, a call or a request (``"error"``)."""
        self.open: set[SendQueue] = set()

    def refuse(self, kind: str, code: int) -> None:
        """Count a refusal: ``kind`` is ``"close"`` or ``"error"``, ``code`` its code."""
        self.refusals[kind, int(code)] += 1


def frame_error_code(error: object) -> int | None:
    """The close code a WebSocket that failed on a bad frame (``WSMsgType.ERROR``, its data
    ``error``) was closed with: aiohttp's, except 1009 (too big), which ``CollabWebSocket``
    sends as ``TOO_LARGE``. ``None`` when ``error`` is no bad frame but the connection
    failing: a peer that answered no ping in time (a ``TimeoutError``), or a reset."""
    if isinstance(error, (TimeoutError, OSError)):
        return None
    code = getattr(error, "code", None)
    if not isinstance(code, int):
        return int(WSCloseCode.INTERNAL_ERROR)
    return int(ErrorCode.TOO_LARGE) if code == WSCloseCode.MESSAGE_TOO_BIG else code


def read_failed(traffic: Traffic, log: logging.Logger, name: str, error: object) -> None:
    """A WebSocket's read failed (``WSMsgType.ERROR``, its data ``error``; aiohttp has
    closed the socket already): a bad frame is a warning and a refusal with its close code;
    a connection that failed is neither, it is only said."""
    code = frame_error_code(error)
    if code is None:
        log.info("%s: connection lost: %s", name, error)
        return
    log.warning("%s: closed on a bad frame: %s", name, error)
    traffic.refuse("close", code)
