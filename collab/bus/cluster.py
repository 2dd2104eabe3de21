"""``Cluster``: what one node shares with the others through one Redis.

``collab serve --redis redis://HOST:PORT/DB`` makes one: the documents' history lives in
Redis (``RedisStore``, which every node reads and appends to), the nodes hear each other's
updates and awareness through it (``RedisBus``) and take turns at each branch's git work
(``RedisLeases``). The repositories' directory is shared by the nodes. A node's id is
claimed by one process at a time (``RedisBus``: a start that finds it held by a live process
fails with ``NodeIdTaken``). Redis must keep what
it acknowledged: ``appendonly yes`` and ``appendfsync always`` (the store warns otherwise).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
from collections.abc import AsyncIterator

from redis.asyncio import Redis
from redis.exceptions import RedisError

from collab.bus.keys import DEFAULT_PREFIX
from collab.bus.nodes import nodes_with_open
from collab.bus.redis import RedisBus
from collab.bus.redis_lease import RedisLeases
from collab.store.redis_store import WRITE_TIMEOUT, RedisStore

__all__ = ["Cluster", "default_node_id"]

STATUS_TIMEOUT = 1.0
"""Seconds ``status`` waits for Redis before it calls this node degraded."""
HOLD_TTL = 30.0
"""Seconds a hold on a branch's opens (``Cluster.opens_held``) lasts at most: one its node
never let go of (it died) holds the other nodes' opens no longer."""

# KEYS: the hold. ARGV: its holder.
_LET_GO = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def default_node_id() -> str:
    """A node id unique to this process: host name, process id, a few random characters."""
    host = socket.gethostname().replace(" ", "-") or "node"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


class Cluster:
    """The store, bus and leases of one node; the bus's lifetime is the node's (a
    ``Service``: started after the store, stopped before it)."""

    def __init__(
        self,
        url: str,
        node_id: str | None = None,
        *,
        prefix: str = DEFAULT_PREFIX,
        lease_ttl: float = 10.0,
    ) -> None:
        self.url = url
        self.node_id = node_id or default_node_id()
        self.bus = RedisBus(url, self.node_id, prefix=prefix)
        # entries and leases carry this process's incarnation with the node's id: a node's
        # own entries are the ones this very process wrote, and a lease is this process's
        self.store = RedisStore(url, node_id=self.bus.author, prefix=prefix)
        # leases: a Redis that does not answer fails the call (the work is tried again
        # later) instead of holding the branch's lock, and every push and merge behind it
        self._client = Redis.from_url(
            url, socket_timeout=WRITE_TIMEOUT, socket_connect_timeout=WRITE_TIMEOUT
        )
        self.leases = RedisLeases(self._client, self.bus.author, ttl=lease_ttl, prefix=prefix)
        self._let_go = self._client.register_script(_LET_GO)

    async def start(self) -> None:
        await self.bus.start()

    async def stop(self) -> None:
        await self.bus.stop()
        await self._client.aclose()

    async def open_elsewhere(self, branch: str) -> list[str]:
        """The other nodes alive that have documents of ``branch`` (``repo/branch``) open,
        as of their last beat: those whose set of open branches holds it (that of the
        process their key names: a set a dead or replaced process left is not read)."""
        return await nodes_with_open(self._client, self.bus.keys, branch, besides=self.node_id)

    async def open_elsewhere_now(self, branch: str) -> list[str]:
        """As :meth:`open_elsewhere`, once every node has beaten since this was asked: a
        document opened just before (its node's set not written yet) is counted too."""
        await asyncio.sleep(self.bus.heartbeat_s + 0.5)
        return await self.open_elsewhere(branch)

    @property
    def degraded(self) -> bool:
        """Whether this node is cut off from the cluster: Redis does not answer its bus or
        its store, or its key lapsed (its beats fail: Redis refuses writes, say)."""
        return not (self.bus.healthy and self.store.reachable and self.bus.registered)

    @property
    def feed_behind(self) -> int | None:
        """Entries of the cluster's feed this node had not read yet at its last beat
        (``None``: not known while Redis cannot be reached)."""
        return self.bus.feed_behind

    @property
    def redis_seconds(self) -> float | None:
        """The round trip of this node's last beat to Redis (``None``: none yet)."""
        return None if self.bus.redis_ms is None else self.bus.redis_ms / 1000

    @property
    def nodes_alive(self) -> int | None:
        """How many nodes were alive at the last look (``None``: not looked yet)."""
        return None if self.bus.alive is None else len(self.bus.alive)

    @contextlib.asynccontextmanager
    async def opens_held(self, branch: str) -> AsyncIterator[None]:
        """Keep the other nodes from opening documents of ``branch`` (``repo/branch``) while
        in the block (an open waits for it, see :meth:`held_by_another` and
        ``Rooms.acquire``, then finds whether the branch is still there), and enter it once
        every node has beaten since the hold began: :meth:`open_elsewhere` then counts
        every document open elsewhere, or being opened past its look at the hold, and none
        is opened until the block ends. For a branch being deleted: nothing is opened on it
        between the look and the deletion."""
        key = self.bus.keys.opens_held(branch)
        await self._client.set(key, self.bus.author, px=round(HOLD_TTL * 1000))
        try:
            await asyncio.sleep(self.bus.heartbeat_s + 0.5)
            yield
        finally:
            with contextlib.suppress(RedisError, OSError):  # (it lapses)
                await self._let_go(keys=[key], args=[self.bus.author])

    async def held_by_another(self, branch: str) -> bool:
        """Whether another node holds the opens of ``branch``'s documents now (see
        :meth:`opens_held`). Not one Redis cannot tell of: the open goes on (its load needs
        Redis too)."""
        if not self.bus.healthy:
            return False
        try:
            holder = await self._client.get(self.bus.keys.opens_held(branch))
        except (RedisError, OSError):
            return False
        return holder is not None and holder != self.bus.author.encode()

    async def status(self) -> dict[str, object]:
        """The nodes alive and whether this one reaches Redis (for ``/healthz``): answered
        within a second, whatever Redis does. Healthy only once this node is among the
        nodes alive (``registered``): a Redis back without its data lacks its key until its
        next beat, and so does one that refuses writes (out of memory, say)."""
        nodes: list[str] = []
        reachable = self.bus.healthy and self.store.reachable
        if reachable:
            try:
                nodes = await asyncio.wait_for(self.bus.nodes(), STATUS_TIMEOUT)
            except (RedisError, OSError, TimeoutError):
                reachable = False
        registered = reachable and self.node_id in nodes and not self.bus.displaced
        return {
            "node": self.node_id,
            "healthy": registered,
            "registered": registered,
            "nodes": nodes,
        }
