"""The ``collab`` command: serve, tokens, workers, and talking to a running server."""

from __future__ import annotations

from .commands import main

__all__ = ["main"]
