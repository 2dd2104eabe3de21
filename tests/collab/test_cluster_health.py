"""What ``/healthz`` and ``/metrics`` of a ``collab serve --redis`` node say, on a real
``redis-server``: the store's failing writes as a single node's SQLite store reports them,
the cluster's own series, and a node that Redis does not list (yet) is not healthy."""

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

from collab import Client, ClientError

ROOM = "demo/main:README.md"


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


async def type_and_flush(node: ServerProcess, user: str, text: str) -> None:
    async with Client(node.url, user=user, reconnect=False) as client:
        doc = await client.open(ROOM)
        doc.text += text
        await client.flush(timeout=10)


async def test_a_node_exports_the_stores_series_and_the_clusters_not_sqlites(
    node: ServerProcess,
) -> None:
    """The store's series an operator alerts on are there as on a single node; the SQLite
    store's own (its fsyncs and transactions) are not, and the cluster's are."""
    await type_and_flush(node, "ann", "hello;")
    health, samples = await read(node)
    assert health["ok"] is True and health["store"] == [] and health["degraded"] is False
    assert health["cluster"]["registered"] is True and health["cluster"]["nodes"] == ["n0"]
    assert samples["collab_store_writes_failing"] == 0
    assert samples["collab_store_write_errors_total"] == 0
    assert samples["collab_store_appends_total"] >= 1
    assert samples["collab_store_write_seconds_count"] >= 1  # Redis's round trips
    for sqlite_only in ("collab_store_fsync_seconds_count", "collab_store_fsyncs_total"):
        assert sqlite_only not in samples
    assert "collab_store_commits_total" not in samples
    assert samples["collab_cluster_degraded"] == 0
    assert samples["collab_cluster_nodes"] == 1
    assert samples["collab_cluster_feed_behind"] >= 0
    assert samples["collab_cluster_redis_seconds"] > 0


async def test_writes_redis_refuses_show_in_healthz_and_metrics_until_one_succeeds(
    node: ServerProcess, redis: RedisProcess
) -> None:
    """A Redis out of memory (``maxmemory`` with ``noeviction``) refuses every write: the
    edits fail, and ``/healthz`` (``ok`` false, ``store`` why) and the metrics say so as
    they do of a full disk on a single node; the node's key lapses, so it is degraded
    too. Once Redis takes writes again, a write that succeeds clears both."""
    await type_and_flush(node, "ann", "before;")
    client = Redis.from_url(redis.url)
    try:
        await client.config_set("maxmemory", 1)
        with pytest.raises((TimeoutError, ConnectionError, ClientError)):
            await type_and_flush(node, "bob", "refused;")

        async def failing() -> bool:
            health, _samples = await read(node)
            return health["ok"] is False and health["degraded"] is True

        await until(failing, 15)
        health, samples = await read(node)
        assert health["store"][0].startswith("writes fail: Redis refuses them: OOM"), health
        assert health["cluster"]["registered"] is False and "n0" not in health["cluster"]["nodes"]
        assert samples["collab_store_writes_failing"] == 1
        assert samples["collab_store_write_errors_total"] >= 1
        assert samples["collab_cluster_degraded"] == 1

        await client.config_set("maxmemory", 0)
        await until(lambda: _registered(node), 15)
        await type_and_flush(node, "bob", "after;")
        health, samples = await read(node)
        assert health["ok"] is True and health["store"] == [] and health["degraded"] is False
        assert samples["collab_store_writes_failing"] == 0
        assert samples["collab_cluster_degraded"] == 0
    finally:
        await client.config_set("maxmemory", 0)
        await client.aclose()


async def _registered(node: ServerProcess) -> bool:
    health, _samples = await read(node)
    return bool(health["cluster"]["registered"])


async def test_a_node_cut_off_from_redis_is_degraded_in_the_metrics(
    node: ServerProcess, redis: RedisProcess
) -> None:
    """Redis gone: ``collab_cluster_degraded`` is 1 (as ``degraded`` in ``/healthz``) and
    how far behind the feed the node reads is not known, so not exported; back after."""
    await type_and_flush(node, "ann", "hello;")
    redis.kill()

    async def degraded() -> bool:
        _health, samples = await read(node)
        return samples["collab_cluster_degraded"] == 1

    await until(degraded, 20)
    health, samples = await read(node)
    assert health["degraded"] is True and health["cluster"]["registered"] is False
    assert "collab_cluster_feed_behind" not in samples
    redis.start()

    async def back() -> bool:
        health, samples = await read(node)
        return health["degraded"] is False and "collab_cluster_feed_behind" in samples

    await until(back, 20)


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
