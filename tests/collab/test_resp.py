"""``RespPipe`` against a real ``redis-server``: batches answered in order, error replies
typed as redis-py types them, and a connection that ends fails what waits on it."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redisproc import RedisProcess

from collab.bus.resp import RespPipe, command, open_resp


async def test_batches_are_answered_in_order_with_their_errors(redis_process: RedisProcess) -> None:
    pipe = await open_resp(redis_process.url, RespPipe, timeout=5, name="test-pipe")
    try:
        first = pipe.send([command("INCR", "n"), command("INCR", "n")])
        second = pipe.send(
            [
                command("EVALSHA", "0" * 40, 0),  # a script Redis does not hold
                command("HSET", "n", "f", "v"),  # the wrong type
                command("GET", "missing"),
                command("INCR", "n"),
            ]
        )
        assert await first == [1, 2]
        unknown, wrong, missing, third = await second
        assert isinstance(unknown, NoScriptError)
        assert isinstance(wrong, ResponseError) and "WRONGTYPE" in str(wrong)
        assert missing is None and third == 3
        assert await pipe.send([]) == []
        name = await pipe.send([command("CLIENT", "GETNAME")])
        assert name == [b"test-pipe"]
    finally:
        pipe.close()
    assert await pipe.closed is None
    with pytest.raises(RedisConnectionError):  # closed: refused at once
        await pipe.send([command("PING")])


async def test_a_connection_that_ends_fails_the_batches_waiting(
    redis_process: RedisProcess,
) -> None:
    pipe = await open_resp(redis_process.url, RespPipe, timeout=5)
    redis_process.pause()  # nothing is answered from now on
    try:
        waiting = pipe.send([command("PING")])
        await asyncio.sleep(0.1)
        assert not waiting.done()
        redis_process.kill()  # while stopped: the PING is never answered
        with pytest.raises((RedisConnectionError, OSError)):  # as the socket said, or ours
            await asyncio.wait_for(waiting, 5)
        with pytest.raises((RedisConnectionError, OSError)):
            await pipe.closed
    finally:
        if redis_process.process is not None:
            redis_process.resume()
