"""A cluster node that stops (a real ``redis-server``): its rooms are snapshotted through the
last update they hold, while the node still follows the shared log, and nothing is left
behind for a room to retry against a stopped store."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from gitcli import until
from redis.asyncio import Redis
from redisproc import RedisProcess
from servers import make_config

from collab import Client, CollabServer
from collab.bus.keys import RedisKeys

ROOM = "demo/main:README.md"


async def stored_history(url: str) -> tuple[int | None, list[int]]:
    """The snapshot's seq and the seqs of the log entries after it, as Redis holds them."""
    keys = RedisKeys()
    redis = Redis.from_url(url)
    try:
        seq = await redis.hget(keys.snapshot(ROOM), "seq")
        entries = await redis.xrange(keys.log(ROOM), "-", "+")
    finally:
        await redis.aclose()
    return (None if seq is None else int(seq)), [
        int(entry_id.decode().split("-")[1]) for entry_id, _ in entries
    ]


async def type_text(server: CollabServer, text: str) -> None:
    client = Client(server.url, user="alice")
    await client.connect()
    try:
        doc = await client.open(ROOM)
        doc.insert(0, text)
        await client.flush()
    finally:
        await client.close()


async def test_a_stopping_node_snapshots_its_rooms_through_their_last_update(
    repos: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    redis = RedisProcess(tmp_path / "redis")
    redis.start()
    try:
        server = CollabServer(
            make_config(repos, tmp_path / "node", redis=redis.url, node_id="n0", grace=60.0)
        )
        await server.start()
        try:
            await type_text(server, "first; ")
            room = server.rooms.get_key(ROOM)
            assert room is not None
            await room.compact()
            first, _ = await stored_history(redis.url)
            assert first is not None and first > 0
            await type_text(server, "second; ")  # the room holds an update past the snapshot
            await until(lambda: room.last_seq > first)
            last = room.last_seq
        finally:
            with caplog.at_level(logging.INFO):
                await server.stop()
        assert await stored_history(redis.url) == (last, [])
        assert server.rooms.get_key(ROOM) is None
        assert "through_seq" not in caplog.text
        assert "persist before unload failed" not in caplog.text
    finally:
        redis.stop()
