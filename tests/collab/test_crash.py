"""``kill -9`` the server in the middle of a seeded editing run, restart it, lose nothing."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

from pycrdt import Doc, Text
from serverproc import ServerProcess

from collab import Client, Document
from collab.store.sqlite_store import SQLiteStore

ROOM = "demo/main:README.md"


async def stored_text(data_dir: Path, key: str) -> str:
    """What the store holds for ``key``, read without any server."""
    store = SQLiteStore(data_dir / "store.sqlite3")
    await store.start()
    try:
        stored = await store.load(key)
    finally:
        await store.stop()
    assert stored is not None and stored.corrupt is None
    doc: Doc[Any] = Doc()
    if stored.snapshot is not None:
        doc.apply_update(stored.snapshot)
    for _seq, update in stored.updates:
        doc.apply_update(update)
    return str(doc.get("source", type=Text))


async def _type(doc: Document, rng: random.Random, name: str, count: int, made: list[str]) -> None:
    for i in range(count):
        marker = f"<{name}:{i}>"
        text = str(doc)
        spots = [0] + [j + 1 for j, ch in enumerate(text) if ch == ">"]
        doc.insert(rng.choice(spots), marker)
        made.append(marker)
        await asyncio.sleep(rng.random() * 0.01)


def _clients(server: ServerProcess, count: int) -> list[Client]:
    return [
        Client(server.url, user=f"u{i}", min_backoff=0.05, max_backoff=0.3) for i in range(count)
    ]


async def _open_and_type(
    clients: list[Client], rng: random.Random, phase: str, count: int
) -> tuple[list[Document], list[list[str]]]:
    """Connect every client, open the room and type ``count`` markers in each, flushed."""
    for client in clients:
        await client.connect()
    docs = [await client.open(ROOM) for client in clients]
    made: list[list[str]] = [[] for _ in clients]
    await asyncio.gather(
        *(_type(d, rng, f"{phase}{i}", count, made[i]) for i, d in enumerate(docs))
    )
    await asyncio.gather(*(c.flush() for c in clients))
    return docs, made


async def test_kill_9_mid_run_loses_no_accepted_update(repos: Path, tmp_path: Path) -> None:
    server = ServerProcess(repos, tmp_path / "data")
    await server.start()
    rng = random.Random(1234)
    clients = _clients(server, 4)
    try:
        # phase 1: type, and record what the server acknowledged as durable
        docs, made = await _open_and_type(clients, rng, "a", 40)
        accepted = [m for ms in made for m in ms]
        # phase 2: keep typing while the server dies mid-stream
        typing = [
            asyncio.create_task(_type(d, rng, f"b{i}", 60, made[i])) for i, d in enumerate(docs)
        ]
        await asyncio.sleep(0.15)
        await server.kill()
        await asyncio.gather(*typing)  # the rest is typed while the server is down
        durable = await stored_text(server.data_dir, ROOM)
        for marker in accepted:
            assert durable.count(marker) == 1, marker
        # restart on the same port; clients reconnect by themselves and resync
        await server.start()
        everything = [m for ms in made for m in ms]
        async with asyncio.timeout(30):
            for doc in docs:
                await doc.wait_for(lambda t: all(m in t for m in everything), timeout=30)
        await asyncio.gather(*(c.flush() for c in clients))
        final = str(docs[0])
        assert all(str(d) == final for d in docs)
        for marker in everything:
            assert final.count(marker) == 1, marker
        assert all(c.reconnects >= 1 for c in clients)
        async with Client(server.url, user="late") as late:
            assert str(await late.open(ROOM)) == final
    finally:
        for client in clients:
            await client.close()
        await server.stop()


async def test_a_tail_the_store_lost_comes_back_from_the_clients(
    repos: Path, tmp_path: Path
) -> None:
    # Broadcasts do not wait for the fsync: a power cut can take the last writes from the
    # store after peers have them. Here the store loses its last records while the server is
    # down; the clients, who hold every update, send back what it lacks when they reconnect.
    server = ServerProcess(repos, tmp_path / "data")
    await server.start()
    rng = random.Random(99)
    clients = _clients(server, 2)
    try:
        _docs, made = await _open_and_type(clients, rng, "c", 20)
        everything = [m for ms in made for m in ms]
        await server.kill()
        with closing(sqlite3.connect(server.data_dir / "store.sqlite3")) as conn:
            (last,) = conn.execute(
                "SELECT MAX(seq) FROM records WHERE doc_id = ?", (ROOM,)
            ).fetchone()
            conn.execute("DELETE FROM records WHERE doc_id = ? AND seq > ?", (ROOM, last - 15))
            conn.commit()
        kept = await stored_text(server.data_dir, ROOM)
        lost = [m for m in everything if m not in kept]
        assert lost  # the store really lacks some of them now

        await server.start()
        async with asyncio.timeout(30):
            while True:  # the server's copy, as a newcomer sees it
                async with Client(server.url, user="late") as late:
                    text = str(await late.open(ROOM))
                if all(m in text for m in everything):
                    break
                await asyncio.sleep(0.1)
        for marker in everything:
            assert text.count(marker) == 1, marker
        await asyncio.gather(*(c.flush() for c in clients))
        restored = await stored_text(server.data_dir, ROOM)
        assert all(restored.count(m) == 1 for m in everything)
    finally:
        for client in clients:
            await client.close()
        await server.stop()
