"""``RedisLeases``: leases kept in Redis, each grant with a fencing token from a counter that
never goes back (``<prefix>fence:<name>``). Every step is one Lua script, so two nodes asking
at once cannot both be granted."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from collab.bus.keys import DEFAULT_PREFIX, RedisKeys
from collab.bus.lease import Grant

__all__ = ["RedisLeases"]

# KEYS: lease, fence counter. ARGV: node, ttl ms. Returns the token, or nil.
_ACQUIRE = """
local held = redis.call('GET', KEYS[1])
if held then
  local node, token = string.match(held, '^(.*) (%d+)$')
  if node ~= ARGV[1] then return nil end
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(token)
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. token, 'PX', ARGV[2])
return token
"""

# KEYS: lease. ARGV: "node token", ttl ms.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS: lease. ARGV: "node token".
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


# KEYS: fence counter. ARGV: the least value it is to hold.
_ADVANCE = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
"""


class RedisLeases:
    """``Leases`` in one Redis, shared by the nodes of a cluster."""

    def __init__(
        self, client: Redis, node_id: str, *, ttl: float = 5.0, prefix: str = DEFAULT_PREFIX
    ) -> None:
        if " " in node_id:
            raise ValueError(f"a node id has no spaces: {node_id!r}")
        self.client = client
        self.node_id = node_id
        self.ttl = ttl
        self.prefix = prefix
        self._keys = RedisKeys(prefix)
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._advance = client.register_script(_ADVANCE)

    def _lease(self, name: str) -> str:
        return self._keys.lease(name)

    def _fence(self, name: str) -> str:
        return f"{self.prefix}fence:{name}"

    @property
    def _ttl_ms(self) -> int:
        return max(1, round(self.ttl * 1000))

    async def acquire(self, name: str) -> Grant | None:
        token: Any = await self._acquire(
            keys=[self._lease(name), self._fence(name)], args=[self.node_id, self._ttl_ms]
        )
        return None if token is None else Grant(name, self.node_id, int(token))

    async def renew(self, grant: Grant) -> bool:
        held = f"{grant.node_id} {grant.token}"
        return bool(await self._renew(keys=[self._lease(grant.name)], args=[held, self._ttl_ms]))

    async def release(self, grant: Grant) -> None:
        await self._release(keys=[self._lease(grant.name)], args=[f"{grant.node_id} {grant.token}"])

    async def advance(self, name: str, at_least: int) -> None:
        await self._advance(keys=[self._fence(name)], args=[at_least])

    async def holder(self, name: str) -> Grant | None:
        held = await self.client.get(self._lease(name))
        if held is None:
            return None
        text = held.decode() if isinstance(held, bytes) else str(held)
        node, _, token = text.rpartition(" ")
        return Grant(name, node, int(token))
