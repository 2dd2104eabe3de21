"""What ``/healthz`` of a ``collab serve --redis`` node says, on a real ``redis-server``: a
node that Redis does not list (yet) is not healthy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from gitcli import until
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis
from redisproc import RedisProcess
from serverproc import ServerProcess


@pytest.fixture
def redis(tmp_path: Path) -> RedisProcess:
    server = RedisProcess(tmp_path / "redis")
    server.start()
    yield server  # type: ignore[misc]
    server.stop()


@pytest.fixture
async def node(repos: Path, tmp_path: Path, redis: RedisProcess) -> AsyncIterator[ServerProcess]:
    (tmp_path / "n0").mkdir()
    made = ServerProcess(
        repos,
        tmp_path / "n0" / "data",
        extra_args=("--redis", redis.url, "--node-id", "n0", "--completion-backend", "none"),
    )
    await made.start()
    try:
        yield made
    finally:
        await made.stop()


async def read(node: ServerProcess) -> tuple[dict[str, Any], dict[str, float]]:
    """``/healthz``, and the samples of ``/metrics`` by name."""
    base = node.url.replace("ws://", "http://")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/healthz") as resp:
            health = await resp.json()
        async with http.get(f"{base}/metrics") as resp:
            text = await resp.text()
    samples = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    return health, samples


async def _registered(node: ServerProcess) -> bool:
    health, _samples = await read(node)
    return bool(health["cluster"]["registered"])


async def test_a_node_missing_from_the_nodes_alive_is_not_healthy(
    node: ServerProcess, redis: RedisProcess
) -> None:
    """A Redis that lost the node's key (restarted without its data, or flushed) lists no
    node until the node's next beat: meanwhile the node says it is not registered, and
    is not healthy; then it lists itself."""
    client = Redis.from_url(redis.url)
    seen: list[dict[str, Any]] = []
    try:
        for _ in range(50):
            await client.delete("collab:node:n0")
            health, _samples = await read(node)
            seen.append(health["cluster"])
            if "n0" not in health["cluster"]["nodes"]:
                break
    finally:
        await client.aclose()
    missing = [status for status in seen if "n0" not in status["nodes"]]
    assert missing, "the node's key was always back before /healthz was read"
    for status in missing:
        assert status["healthy"] is False and status["registered"] is False, status
    await until(lambda: _registered(node), 5)
    health, _samples = await read(node)
    assert health["cluster"]["nodes"] == ["n0"] and health["degraded"] is False
