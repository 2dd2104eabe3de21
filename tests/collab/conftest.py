"""Fixtures shared by the tests under ``tests/collab``."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis
from redisproc import RedisProcess


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """A real ``redis-server`` on a free port, one for each test module that asks for it."""
    server = RedisProcess(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_process(tmp_path: pathlib.Path) -> Iterator[RedisProcess]:
    """A ``redis-server`` of the test's own, which it may kill or pause (writes not fsynced)."""
    process = RedisProcess(tmp_path / "redis", appendfsync="no")
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
async def redis_client(redis_server: RedisProcess) -> AsyncIterator[Redis]:
    """A client of the module's ``redis_server``, emptied first."""
    made = Redis.from_url(redis_server.url)
    await made.flushdb()
    try:
        yield made
    finally:
        await made.aclose()
