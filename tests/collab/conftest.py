"""Fixtures shared by the tests under ``tests/collab``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
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
