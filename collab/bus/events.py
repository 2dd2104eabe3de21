"""``ClusterEvents``: repository events (presence, commits, branch moves) reach the
subscribers of every node, not only those of the node where they happened.

Each event a node's ``EventHub`` publishes is sent on a Redis pub/sub channel of its
repository; every node hears all of them through one pattern subscription and delivers the
others' to its own subscribers (never publishing them again). Like awareness, events are
fire-and-forget: one sent while a node is cut off from Redis is not seen by it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from collab.bus.keys import DEFAULT_PREFIX
from collab.live.events import EventHub

__all__ = ["ClusterEvents"]

log = logging.getLogger("collab.bus")


class ClusterEvents:
    """Joins a node's ``EventHub`` to the other nodes' (a ``Service``)."""

    def __init__(
        self, url: str, node_id: str, events: EventHub, *, prefix: str = DEFAULT_PREFIX
    ) -> None:
        self.url = url
        self.node_id = node_id
        self.events = events
        self.prefix = f"{prefix}ev:"
        self._client: Redis | None = None
        self._listener: asyncio.Task[None] | None = None
        self._sends: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._client = Redis.from_url(self.url)
        self._listener = asyncio.create_task(self._listen(), name="cluster events")
        self.events.forward = self._forward

    async def stop(self) -> None:
        self.events.forward = None
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
        if self._sends:
            await asyncio.gather(*self._sends, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    def _forward(self, repo: str, event: dict[str, Any]) -> None:
        payload = json.dumps({"node": self.node_id, "event": event}).encode()
        task = asyncio.create_task(self._publish(self.prefix + repo, payload))
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def _publish(self, channel: str, payload: bytes) -> None:
        assert self._client is not None
        try:
            await self._client.publish(channel, payload)
        except (RedisError, OSError) as exc:
            log.debug("an event was not sent to the other nodes: %s", exc)

    async def _listen(self) -> None:
        while True:
            client = Redis.from_url(self.url)
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(self.prefix + "*")
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None or message["type"] != "pmessage":
                        continue
                    repo = message["channel"].decode()[len(self.prefix) :]
                    try:
                        body = json.loads(message["data"])
                    except ValueError:
                        continue
                    if body.get("node") != self.node_id and isinstance(body.get("event"), dict):
                        self.events.deliver(repo, body["event"])
            except (RedisError, OSError):
                await asyncio.sleep(0.5)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()
                    await client.aclose()
