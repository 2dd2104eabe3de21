"""Leases: one node at a time does a piece of work (a branch's commits, merges and pushes).

A lease is granted to one node for a time to live and renewed by it; a node that stops
renewing (it died, or lost Redis) loses it when the time runs out, and another node may
take it. Each grant carries a fencing token larger than every earlier grant's, which the
work presents where it writes (``gitsync.fence``), so a holder that lost its lease without
noticing is refused there.

``Leases`` is the seam; ``HubLeases`` the in-process implementation (on a ``LocalHub``'s
table); ``collab.bus.redis_lease.RedisLeases`` the one in Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["Grant", "Held", "HubLeases", "LeaseLost", "LeaseTable", "Leases"]


@dataclass(frozen=True, slots=True)
class Grant:
    """A lease held: by ``node_id``, with fencing ``token``."""

    name: str
    node_id: str
    token: int


@runtime_checkable
class Leases(Protocol):
    node_id: str
    ttl: float
    """Seconds a grant lasts unless renewed."""

    async def acquire(self, name: str) -> Grant | None:
        """The lease, if no other node holds it (this node's own grant if it holds it)."""
        ...

    async def renew(self, grant: Grant) -> bool:
        """Extend the grant; false if it was lost (expired, or taken over)."""
        ...

    async def release(self, grant: Grant) -> None:
        """Give the lease up at once, if it is still this grant."""
        ...

    async def holder(self, name: str) -> Grant | None:
        """Who holds the lease now."""
        ...

    async def advance(self, name: str, at_least: int) -> None:
        """Raise the lease's fencing counter to ``at_least`` if it is below: the next grant's
        token is above it. For a counter that went back (a Redis that lost its data) behind
        a fence a branch has seen, which would refuse every later grant."""
        ...


log = logging.getLogger("collab.bus")


class LeaseLost(RuntimeError):
    """The work's lease expired or was taken over by another node: the work stops."""


class Held:
    """A grant kept for as long as its work lasts: renewed every third of the lease's time
    to live (work longer than a lease, a merge of a large push, is not taken over by
    another node half way), and released by :meth:`release`.

    ``lost`` once a renewal is refused (the grant expired: this process was paused, or
    another node took the lease) or none has been made for a whole time to live (Redis
    cannot be reached); the work checks it (:meth:`check`) before each step that another
    holder could repeat."""

    def __init__(self, leases: Leases, grant: Grant) -> None:
        self.leases = leases
        self.grant = grant
        self.lost = False
        self._renewed = asyncio.get_running_loop().time()
        self._task = asyncio.create_task(self._keep(), name=f"lease {grant.name}")

    def _expired(self) -> bool:
        """No renewal for a whole time to live: the grant ran out (and is lost for good)."""
        if asyncio.get_running_loop().time() - self._renewed >= self.leases.ttl:
            self.lost = True
        return self.lost

    def check(self) -> None:
        """Raise ``LeaseLost`` if the grant is no longer held."""
        if self._expired():
            raise LeaseLost(
                f"{self.grant.name}: lease {self.grant.token} lost (it expired, or another "
                "node took it over); the work stops here"
            )

    async def _keep(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.lost:
            await asyncio.sleep(self.leases.ttl / 3)
            try:
                renewed = await self.leases.renew(self.grant)
            except Exception as exc:  # Redis away: the grant runs out unless it comes back
                log.warning(
                    "%s: renewing lease %d failed: %s", self.grant.name, self.grant.token, exc
                )
                self._expired()
                continue
            if not renewed:
                log.warning("%s: lease %d lost", self.grant.name, self.grant.token)
                self.lost = True
            else:
                self._renewed = loop.time()

    async def release(self) -> None:
        """Stop renewing and give the lease up (if it is still this grant)."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self.leases.release(self.grant)


class LeaseTable:
    """The in-process cluster's leases and fencing counters (shared by its nodes)."""

    def __init__(self) -> None:
        self.held: dict[str, tuple[Grant, float]] = {}
        self.tokens: dict[str, int] = {}


class HubLeases:
    """``Leases`` on a table shared by the nodes of one process."""

    def __init__(self, table: LeaseTable, node_id: str, ttl: float = 5.0) -> None:
        self.table = table
        self.node_id = node_id
        self.ttl = ttl

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _current(self, name: str) -> Grant | None:
        held = self.table.held.get(name)
        if held is None:
            return None
        grant, until = held
        if until <= self._now():
            del self.table.held[name]
            return None
        return grant

    async def acquire(self, name: str) -> Grant | None:
        grant = self._current(name)
        if grant is not None:
            if grant.node_id != self.node_id:
                return None
            self.table.held[name] = (grant, self._now() + self.ttl)
            return grant
        token = self.table.tokens.get(name, 0) + 1
        self.table.tokens[name] = token
        grant = Grant(name, self.node_id, token)
        self.table.held[name] = (grant, self._now() + self.ttl)
        return grant

    async def renew(self, grant: Grant) -> bool:
        if self._current(grant.name) != grant:
            return False
        self.table.held[grant.name] = (grant, self._now() + self.ttl)
        return True

    async def release(self, grant: Grant) -> None:
        if self._current(grant.name) == grant:
            del self.table.held[grant.name]

    async def holder(self, name: str) -> Grant | None:
        return self._current(name)

    async def advance(self, name: str, at_least: int) -> None:
        self.table.tokens[name] = max(self.table.tokens.get(name, 0), at_least)
