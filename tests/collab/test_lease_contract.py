"""Contract tests for ``Leases``: in process and in a real ``redis-server``."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis
from redisproc import RedisProcess

from collab.bus.lease import Held, HubLeases, LeaseLost, Leases, LeaseTable
from collab.bus.redis_lease import RedisLeases

TTL = 0.3


_prefixes = itertools.count()


@pytest.fixture(params=["local", "redis"])
async def leases_for(request: pytest.FixtureRequest) -> AsyncIterator[Callable[[str], Leases]]:
    if request.param == "local":
        table = LeaseTable()
        yield lambda node: HubLeases(table, node, ttl=TTL)
        return
    server: RedisProcess = request.getfixturevalue("redis_server")
    client = Redis.from_url(server.url)
    prefix = f"l{next(_prefixes)}:"
    yield lambda node: RedisLeases(client, node, ttl=TTL, prefix=prefix)
    await client.aclose()


async def test_one_node_holds_a_lease(leases_for: Callable[[str], Leases]) -> None:
    a, b = leases_for("a"), leases_for("b")
    grant = await a.acquire("demo/main")
    assert grant is not None and grant.node_id == "a"
    assert await b.acquire("demo/main") is None
    assert await a.acquire("demo/main") == grant  # asked again: the same grant, renewed
    assert await b.holder("demo/main") == grant
    other = await b.acquire("demo/topic")  # another name is another lease
    assert other is not None and other.node_id == "b"


async def test_an_unrenewed_lease_moves_with_a_larger_token(
    leases_for: Callable[[str], Leases],
) -> None:
    a, b = leases_for("a"), leases_for("b")
    first = await a.acquire("branch")
    assert first is not None
    for _ in range(3):  # renewed, it outlives its time to live
        await asyncio.sleep(TTL / 2)
        assert await a.renew(first)
    assert await b.acquire("branch") is None
    await asyncio.sleep(TTL * 1.5)  # a stops renewing: it died, or lost Redis
    second = await b.acquire("branch")
    assert second is not None and second.token > first.token
    assert not await a.renew(first)  # the old grant is lost for good
    await a.release(first)  # and cannot release the new one
    assert await a.holder("branch") == second


async def test_a_released_lease_is_granted_again_at_once(
    leases_for: Callable[[str], Leases],
) -> None:
    a, b = leases_for("a"), leases_for("b")
    first = await a.acquire("branch")
    assert first is not None
    await a.release(first)
    assert await a.holder("branch") is None
    second = await b.acquire("branch")
    assert second is not None and second.token > first.token


async def test_nodes_asking_at_once_get_one_grant(leases_for: Callable[[str], Leases]) -> None:
    nodes = [leases_for(f"n{i}") for i in range(8)]
    grants = await asyncio.gather(*(n.acquire("branch") for n in nodes))
    granted = [g for g in grants if g is not None]
    assert len(granted) == 1


async def test_an_advanced_counter_grants_above_it_and_never_goes_back(
    leases_for: Callable[[str], Leases],
) -> None:
    a = leases_for("a")
    first = await a.acquire("branch")
    assert first is not None
    await a.release(first)
    await a.advance("branch", first.token + 40)
    second = await a.acquire("branch")
    assert second is not None and second.token > first.token + 40
    await a.release(second)
    await a.advance("branch", 1)  # lower: nothing changes
    third = await a.acquire("branch")
    assert third is not None and third.token > second.token


async def test_a_held_grant_is_renewed_for_as_long_as_its_work_lasts(
    leases_for: Callable[[str], Leases],
) -> None:
    a, b = leases_for("a"), leases_for("b")
    grant = await a.acquire("branch")
    assert grant is not None
    held = Held(a, grant)
    for _ in range(5):  # well past its time to live
        await asyncio.sleep(TTL / 2)
        held.check()
        assert await b.acquire("branch") is None
    await held.release()
    assert await b.acquire("branch") is not None  # released at once


async def test_a_held_grant_that_expired_is_lost_and_stops_its_work(
    leases_for: Callable[[str], Leases],
) -> None:
    a, b = leases_for("a"), leases_for("b")
    grant = await a.acquire("branch")
    assert grant is not None
    held = Held(a, grant)
    time.sleep(TTL * 1.5)  # this process paused past the lease's time to live
    taken = await b.acquire("branch")
    assert taken is not None and taken.token > grant.token
    with pytest.raises(LeaseLost):
        held.check()
    await asyncio.sleep(TTL / 2)  # its renewal is refused: lost for good
    assert held.lost
    await held.release()  # and it gives up nothing of the new holder's
    assert await b.holder("branch") == taken
