"""Real-time collaboration and git-sync engine: the asyncio server and client."""

from __future__ import annotations

from .client import Client, ClientError, Document
from .server.app import CollabServer
from .server.config import ServerConfig

__all__ = ["Client", "ClientError", "CollabServer", "Document", "ServerConfig"]
