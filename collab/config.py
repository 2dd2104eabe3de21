"""Server settings, with the defaults the embedded engine runs on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["ServerConfig"]


@dataclass(slots=True)
class ServerConfig:
    """Everything a :class:`collab.server.CollabServer` needs; all sizes in bytes, times in s."""

    repos: Path
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8765
    secret: bytes | None = None  # None: dev mode (loopback only, ?user=NAME)
    grace: float = 5.0  # an idle room stays loaded this long after its last peer leaves
    heartbeat: float = 30.0  # WebSocket ping interval; a peer silent for half of it is dropped
    max_message: int = 8 * 1024 * 1024
    outbox_limit: int = 4096  # frames queued for one connection before it counts as a slow reader
    hello_timeout: float = 10.0
    max_open_docs: int = 256  # per /ws connection
    max_calls: int = 64  # operations running at once per /ws connection
    group_window: float = 0.002  # store group commit window
    compact_every: int = 1000  # updates between snapshots
    store: str = "sqlite"  # "sqlite" or "memory"
