"""Real-time collaboration and git-sync engine: the asyncio server and client."""

from __future__ import annotations

from .client import Client, ClientError, Document
from .config import ServerConfig
from .server import CollabServer

__all__ = ["Client", "ClientError", "CollabServer", "Document", "ServerConfig"]
