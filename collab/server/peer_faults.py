"""What a peer does wrong at the HTTP level, logged as one line: aiohttp logs a malformed
request (a header over its limit, both a length and chunks, an unknown encoding) or a
connection lost while it answers a ping as an ``ERROR`` with a traceback, which a client
can repeat at will to fill the log. The peer has its answer (400, or nothing left to
answer); the server did nothing wrong."""

from __future__ import annotations

import logging

from aiohttp.http_exceptions import HttpProcessingError

__all__ = ["PeerFaults", "quiet_peer_faults"]

_PEER_FAULTS = (HttpProcessingError, ConnectionError)


class PeerFaults(logging.Filter):
    """Turns aiohttp's record of a peer's fault into one ``INFO`` line, without traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, _PEER_FAULTS):
            said = record.getMessage()
            record.msg = "%s (%s: %s)"
            record.args = (said, type(exc).__name__, _summary(exc))
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def _summary(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] + ("..." if len(text) > 200 else "")


def quiet_peer_faults() -> None:
    """Install :class:`PeerFaults` on aiohttp's server logger, once."""
    logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, PeerFaults) for f in logger.filters):
        logger.addFilter(PeerFaults())
