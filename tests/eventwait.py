"""Waiting for the events a subscribed client receives, in the tests."""

from __future__ import annotations

import asyncio
from typing import Any

from collab import Client

__all__ = ["Events"]


class Events:
    """The events ``client`` receives (it subscribed), kept as they are read."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.seen: list[dict[str, Any]] = []

    async def wait_for(self, kind: str, *, timeout: float = 5, **match: object) -> dict[str, Any]:
        """The first event of ``kind`` whose fields equal ``match``, among those seen
        already, then those that come within ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            looked = 0
            while True:
                for event in self.seen[looked:]:
                    if event.get("kind") == kind and all(
                        event.get(k) == v for k, v in match.items()
                    ):
                        return event
                looked = len(self.seen)
                self.seen.append((await self.client.events.get()).data)
