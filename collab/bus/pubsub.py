"""``PubSub``: what a node hears and says on Redis pub/sub channels, fire-and-forget.

Awareness (``RedisBus``), forwarded completion jobs (``ClusterJobs``) and repository events
(``ClusterEvents``) all travel this way. A task holds one subscription (to channels, or to
a pattern) and hands each message to a callback; when Redis cannot be reached it connects
again, waiting longer after each failed try, since pub/sub keeps nothing for a node that is
cut off and the sooner it listens again the less it misses. Messages are published from
tasks of their own, so that the caller (a room, an event, a job's callback) never waits on
Redis; those tasks are held until they end, and ``stop`` waits a little for the ones still
under way (an answer to another node is worth sending as this node stops) and cancels the
rest, so that a Redis that does not answer cannot hold a node's shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

__all__ = ["RETRY_S", "STOP_WAIT_S", "PubSub"]

log = logging.getLogger("collab.bus")

RETRY_S = (0.05, 0.1, 0.2, 0.5, 1.0)
"""Waits between tries while Redis cannot be reached (the last one repeats)."""
STOP_WAIT_S = 2.0
"""How long ``stop`` waits for the sends still under way before it cancels them."""
POLL_S = 1.0
"""How long one wait for a message lasts before it is made again."""


class PubSub:
    """One subscription heard by a task, and the sends made in the background (a
    ``Service``). ``on_message`` is called with each message's channel and data."""

    def __init__(
        self,
        url: str,
        on_message: Callable[[str, bytes], None],
        *,
        channel: str | None = None,
        pattern: str | None = None,
        name: str = "pubsub",
        socket_timeout: float | None = None,
        retry_s: Sequence[float] = RETRY_S,
        lost: str = "a message to %s was lost: %s",
        lost_level: int = logging.DEBUG,
    ) -> None:
        if (channel is None) == (pattern is None):
            raise ValueError("give a channel or a pattern, not both")
        self.url = url
        self.on_message = on_message
        self.channel = channel
        self.pattern = pattern
        self._topic: str = channel if channel is not None else str(pattern)
        self.name = name
        self.socket_timeout = socket_timeout
        self.retry_s = tuple(retry_s)
        self.lost = lost
        """How a failed publish is logged (the channel and the error fill it in)."""
        self.lost_level = lost_level
        self.client: Redis | None = None
        """The connection publishes are sent on, while started."""
        self._listener: asyncio.Task[None] | None = None
        self._listening = False
        self._sends: set[asyncio.Task[None]] = set()
        self._open = False

    async def start(self) -> None:
        if self._open:
            return
        self._open = True
        self._listening = True
        self.client = Redis.from_url(self.url, socket_timeout=self.socket_timeout)
        self._listener = asyncio.create_task(self._listen(), name=self.name)

    async def unsubscribe(self) -> None:
        """Stop hearing messages; publishing goes on until ``stop``.

        The listener is cancelled, and also told to end: a cancellation that comes while
        redis-py waits for a message can be lost there (with redis-py 8.2 on Python 3.11
        the wait, made under ``asyncio.timeout``, may end as a plain timeout instead), and a
        loop that relied on it would wait for messages forever; told, it ends after that
        wait at the latest (``POLL_S``)."""
        self._listening = False
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)

    async def stop(self) -> None:
        """Stop hearing, let the sends under way end (for ``STOP_WAIT_S`` at most: the rest
        are cancelled), and close the connection."""
        await self.unsubscribe()
        if not self._open:
            return
        self._open = False
        await self._drain()
        if self.client is not None:
            with contextlib.suppress(RedisError, OSError):
                await self.client.aclose()
            self.client = None

    # -- sending ----------------------------------------------------------------------------

    def publish(self, channel: str, payload: bytes) -> None:
        """Send ``payload`` on ``channel`` in the background; a failure is logged."""
        self.spawn(self._publish(channel, payload))

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run a short send in the background, held until it ends (dropped once stopped)."""
        if not self._open:
            work.close()
            return
        task = asyncio.create_task(work)
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def _publish(self, channel: str, payload: bytes) -> None:
        assert self.client is not None
        try:
            await self.client.publish(channel, payload)
        except (RedisError, OSError) as exc:
            log.log(self.lost_level, self.lost, channel, exc)

    async def _drain(self) -> None:
        """Wait for the held sends (those started meanwhile too) until the time is up."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STOP_WAIT_S
        while self._sends:
            left = deadline - loop.time()
            if left <= 0:
                for task in self._sends:
                    task.cancel()
                await asyncio.gather(*self._sends, return_exceptions=True)
                break
            await asyncio.wait(set(self._sends), timeout=left)

    # -- hearing ----------------------------------------------------------------------------

    async def _listen(self) -> None:
        kind = "message" if self.channel is not None else "pmessage"
        failures = 0
        while self._listening:
            client = Redis.from_url(self.url, socket_timeout=self.socket_timeout)
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                if self.pattern is None:
                    await pubsub.subscribe(self._topic)
                else:
                    await pubsub.psubscribe(self._topic)
                failures = 0
                while self._listening:
                    message = await pubsub.get_message(timeout=POLL_S)
                    if message is None or message["type"] != kind:
                        continue
                    self.on_message(message["channel"].decode(), message["data"])
            except (RedisError, OSError) as exc:
                log.debug("%s: listening failed, trying again: %s", self.name, exc)
                await asyncio.sleep(self.retry_s[min(failures, len(self.retry_s) - 1)])
                failures += 1
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()
                    await client.aclose()
