"""``ClusterEvents``: repository events (presence, commits, branch moves) reach the
subscribers of every node, not only those of the node where they happened.

Each event a node's ``EventHub`` publishes is sent on a Redis pub/sub channel of its
repository; every node hears all of them through one pattern subscription and delivers the
others' to its own subscribers (never publishing them again). Like awareness, events are
fire-and-forget: one sent while a node is cut off from Redis is not seen by it.
"""

from __future__ import annotations

import json
from typing import Any

from collab.bus.keys import DEFAULT_PREFIX
from collab.bus.pubsub import PubSub
from collab.live.events import EventHub

__all__ = ["ClusterEvents"]


class ClusterEvents:
    """Joins a node's ``EventHub`` to the other nodes' (a ``Service``)."""

    def __init__(
        self, url: str, node_id: str, events: EventHub, *, prefix: str = DEFAULT_PREFIX
    ) -> None:
        self.url = url
        self.node_id = node_id
        self.events = events
        self.prefix = f"{prefix}ev:"
        self._pubsub = PubSub(
            url,
            self._heard,
            pattern=self.prefix + "*",
            name="cluster events",
            retry_s=(0.5,),
            lost="an event was not sent to the other nodes (%s): %s",
        )

    async def start(self) -> None:
        await self._pubsub.start()
        self.events.forward = self._forward

    async def stop(self) -> None:
        self.events.forward = None
        await self._pubsub.stop()

    def _forward(self, repo: str, event: dict[str, Any]) -> None:
        payload = json.dumps({"node": self.node_id, "event": event}).encode()
        self._pubsub.publish(self.prefix + repo, payload)

    def _heard(self, channel: str, data: bytes) -> None:
        repo = channel[len(self.prefix) :]
        try:
            body = json.loads(data)
        except ValueError:
            return
        if body.get("node") != self.node_id and isinstance(body.get("event"), dict):
            self.events.deliver(repo, body["event"])
