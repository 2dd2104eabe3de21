"""``RedisBus``: the nodes of a cluster hear each other through Redis.

Updates: a reader task keeps one blocking ``XREAD`` open over the logs of the documents this
node watches (each from the last entry it saw) and over a wake stream of its own, which
``watch`` writes to so that a new document joins the read at once. Entries this node wrote
itself move its cursor without being delivered. Since the logs are streams, a node that was
cut off (Redis restarted or unreachable, a slow node) reads on from its cursors when it is
back: nothing is skipped and nothing is read twice. An entry beyond a missing one means the
log was compacted past the cursor: the document's listener is told to reload (``bus_gap``).

Awareness travels on pub/sub channels, one per document, all heard through one pattern
subscription; a message lost while a node is cut off is renewed by its client within
seconds, as y-protocols' awareness expects.

Liveness: each node renews a key with a short time to live; a node whose key is gone (it
stopped, or died and the key expired) is reported to every listener (``bus_node_gone``).
``healthy`` is false while Redis cannot be reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import RedisError

from collab.bus.bus import BusListener, Watch
from collab.bus.keys import DEFAULT_PREFIX, RedisKeys, seq_of
from collab.bus.pubsub import RETRY_S, PubSub

__all__ = ["RedisBus"]

log = logging.getLogger("collab.bus")

BLOCK_MS = 5_000
"""How long one read waits for news before it is sent again (a wake ends it sooner)."""
READ_COUNT = 512
"""At most this many entries per log per read: a long backlog comes in pieces."""
NODE_TTL_MS = 3_000
"""A node whose key is not renewed for this long is gone."""
HEARTBEAT_S = 1.0
READ_GRACE_S = 2.0
"""A read unanswered this long after its block ends means Redis cannot be reached."""


class RedisBus:
    """A ``Bus`` over one Redis (the same one as the nodes' ``RedisStore``)."""

    def __init__(
        self,
        url: str,
        node_id: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        block_ms: int = BLOCK_MS,
        node_ttl_ms: int = NODE_TTL_MS,
        heartbeat_s: float = HEARTBEAT_S,
    ) -> None:
        self.url = url
        self.node_id = node_id
        self.keys = RedisKeys(prefix)
        self.block_ms = block_ms
        self.node_ttl_ms = node_ttl_ms
        self.heartbeat_s = heartbeat_s
        self._watches: dict[str, Watch] = {}
        self._reader_client: Redis | None = None
        self._client: Redis | None = None
        self._tasks: list[asyncio.Task[None]] = []
        # a read that outlasts its block by this much means Redis is stopped or cut off
        self._timeout = block_ms / 1000 + READ_GRACE_S
        self._awareness = PubSub(
            url,
            self._heard,
            pattern=self.keys.awareness("*"),
            name=f"bus-awareness-{node_id}",
            socket_timeout=self._timeout,
        )
        self._wake_cursor = "0-0"
        self._woken = False
        self._healthy = False
        self._running = False
        self._nodes: set[str] = set()
        self.describe: Callable[[], dict[str, object]] | None = None
        """What this node says of itself in its key (rooms, connections), for the others and
        for ``collab cluster status``."""
        self.redis_ms: float | None = None
        """The round trip of the last heartbeat, in milliseconds."""
        self.unhealthy_since: float | None = None
        """When Redis last became unreachable (monotonic clock), while it is."""

    @property
    def healthy(self) -> bool:
        return self._healthy

    async def start(self) -> None:
        if self._running:
            return
        self._client = Redis.from_url(self.url, socket_timeout=self._timeout)
        self._reader_client = Redis.from_url(self.url, socket_timeout=self._timeout)
        await self._client.delete(self.keys.wake(self.node_id))
        self._woken = False
        await self._beat()
        self._nodes = set(await self.nodes())
        self._healthy = True
        self._running = True
        await self._awareness.start()
        self._tasks = [
            asyncio.create_task(self._read_loop(), name=f"bus-read-{self.node_id}"),
            asyncio.create_task(self._heartbeat_loop(), name=f"bus-heartbeat-{self.node_id}"),
        ]

    async def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, RedisError, OSError):
                await task
        self._tasks = []
        await self._awareness.stop()  # the wakes under way are its sends too
        self._watches.clear()
        assert self._client is not None and self._reader_client is not None
        with contextlib.suppress(RedisError, OSError):
            await self._client.delete(self.keys.node(self.node_id), self.keys.wake(self.node_id))
        await self._client.aclose()
        await self._reader_client.aclose()
        self._client = self._reader_client = None
        self._healthy = False

    # -- watching -------------------------------------------------------------------------

    def watch(self, doc_id: str, after: int, listener: BusListener) -> None:
        self._watches[doc_id] = Watch(after, listener)
        self._wake()

    def unwatch(self, doc_id: str) -> None:
        self._watches.pop(doc_id, None)

    def position(self, doc_id: str) -> int | None:
        watch = self._watches.get(doc_id)
        return None if watch is None else watch.cursor

    def _wake(self) -> None:
        """End the blocked read, so that the next one includes the documents watched now."""
        if self._woken or not self._running or self._client is None:
            return
        self._woken = True
        self._awareness.spawn(self._send_wake())

    async def _send_wake(self) -> None:
        assert self._client is not None
        try:
            await self._client.xadd(
                self.keys.wake(self.node_id), {"w": b""}, maxlen=16, approximate=True
            )
        except (RedisError, OSError):
            pass  # the read loop is failing too, and reads every watch when it is back
        finally:
            self._woken = False

    async def _read_loop(self) -> None:
        failures = 0
        while self._running:
            try:
                await self._read_once()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self._set_healthy(False, exc)
                await asyncio.sleep(RETRY_S[min(failures, len(RETRY_S) - 1)])
                failures += 1
                continue
            failures = 0
            self._set_healthy(True)

    async def _read_once(self) -> None:
        assert self._reader_client is not None
        streams: dict[Any, Any] = {self.keys.wake(self.node_id): self._wake_cursor}
        for doc_id, watch in self._watches.items():
            if not watch.gapped:
                streams[self.keys.log(doc_id)] = f"0-{watch.cursor}"
        replies = cast(
            list[tuple[bytes, list[Any]]],
            await self._reader_client.xread(streams, count=READ_COUNT, block=self.block_ms),
        )
        for key, entries in replies or []:
            name = key.decode()
            if name == self.keys.wake(self.node_id):
                self._wake_cursor = entries[-1][0].decode()
                continue
            self._take(self.keys.doc_of_log(name), entries)

    def _take(self, doc_id: str, entries: list[Any]) -> None:
        watch = self._watches.get(doc_id)
        if watch is None or watch.gapped:
            return
        updates: list[tuple[int, bytes]] = []
        for entry_id, fields in entries:
            seq = seq_of(entry_id)
            if seq <= watch.cursor:
                continue
            if seq != watch.cursor + 1:
                # seqs are consecutive in a log: an entry is missing, compacted away unread
                if updates:
                    watch.listener.bus_updates(doc_id, updates)
                watch.gapped = True
                watch.listener.bus_gap(doc_id, watch.cursor)
                return
            watch.cursor = seq
            if fields.get(b"n", b"").decode() != self.node_id:
                updates.append((seq, fields[b"u"]))
        if updates:
            watch.listener.bus_updates(doc_id, updates)

    def _set_healthy(self, healthy: bool, exc: BaseException | None = None) -> None:
        if healthy == self._healthy:
            return
        self._healthy = healthy
        if healthy:
            log.info("Redis at %s is reachable again; reading on from each document", self.url)
            self.unhealthy_since = None
        else:
            log.warning("Redis at %s cannot be reached (%s); serving local peers", self.url, exc)
            self.unhealthy_since = time.monotonic()

    # -- awareness ------------------------------------------------------------------------

    def publish_awareness(self, doc_id: str, payload: bytes) -> None:
        if not self._running or not self._healthy or self._client is None:
            return
        message = self.node_id.encode() + b"\0" + bytes(payload)
        self._awareness.publish(self.keys.awareness(doc_id), message)

    def _heard(self, channel: str, data: bytes) -> None:
        """An awareness message on ``channel``: the sending node's id, a NUL, the payload."""
        doc_id = channel[len(self.keys.awareness("")) :]
        node, _, payload = data.partition(b"\0")
        node_id = node.decode()
        watch = self._watches.get(doc_id)
        if watch is not None and node_id != self.node_id:
            watch.listener.bus_awareness(doc_id, node_id, payload)

    # -- liveness -------------------------------------------------------------------------

    async def _beat(self) -> None:
        """Renew this node's key; its value describes the node (``collab cluster status``):
        what ``describe`` says, when, and the round trip of the last beat."""
        assert self._client is not None
        about: dict[str, object] = {"at": time.time(), "redis_ms": self.redis_ms}
        if self.describe is not None:
            about.update(self.describe())
        started = time.perf_counter()
        await self._client.set(
            self.keys.node(self.node_id), json.dumps(about).encode(), px=self.node_ttl_ms
        )
        self.redis_ms = round((time.perf_counter() - started) * 1000, 2)

    async def nodes(self) -> list[str]:
        """The nodes alive now. Each one seen is known from then on, so that the next beat
        that misses it reports it gone, even if it came and went between two beats (seen
        only by a ``/healthz``, say)."""
        assert self._client is not None
        skip = len(self.keys.node(""))
        found = [key.decode()[skip:] async for key in self._client.scan_iter(self.keys.nodes)]
        self._nodes.update(found)
        return sorted(found)

    async def _heartbeat_loop(self) -> None:
        while self._running:
            await asyncio.sleep(self.heartbeat_s)
            try:
                await self._beat()
                alive = set(await self.nodes())
            except (RedisError, OSError):
                continue  # the read loop reports the outage
            for gone in sorted(self._nodes - alive):
                log.info("node %s is gone", gone)
                for watch in list(self._watches.values()):
                    watch.listener.bus_node_gone(gone)
            self._nodes = alive
