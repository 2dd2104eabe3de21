"""``Client.flush()`` means durable, edits made offline included: a ``kill -9`` right after
it returns never loses what it acknowledged."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from serverproc import ServerProcess
from test_crash import stored_text

from collab import Client

ROOM = "demo/main:README.md"
# a crash loop: bounded by default, for a suite that stays fast; more with COLLAB_FLUSH_TRIES
TRIES = int(os.environ.get("COLLAB_FLUSH_TRIES", "20"))


@asynccontextmanager
async def _served(repos: Path, tmp_path: Path) -> AsyncIterator[tuple[ServerProcess, Client]]:
    """A server process (killed and started again by the tests) and a client connected to
    it that reconnects quickly; both stopped after."""
    server = ServerProcess(repos, tmp_path / "data", extra_args=("--completion-backend", "none"))
    await server.start()
    client = Client(server.url, user="ann", min_backoff=0.01, max_backoff=0.05)
    try:
        await client.connect()
        yield server, client
    finally:
        await client.close()
        await server.stop()


@pytest.mark.slow
async def test_flush_covers_edits_made_offline_across_kill_9(repos: Path, tmp_path: Path) -> None:
    markers: list[str] = []
    async with _served(repos, tmp_path) as (server, client):
        doc = await client.open(ROOM)
        await server.kill()
        for i in range(TRIES):
            marker = f"<offline {i}>"
            doc.insert(0, marker)  # the server is down: this reaches it in the reconnect
            markers.append(marker)
            await server.start()
            await client.flush(timeout=20)
            await server.kill()  # no shutdown code: only what was fsynced is there
            stored = await stored_text(server.data_dir, ROOM)
            for made in markers:
                assert stored.count(made) == 1, (i, made)


async def test_closing_a_document_sends_its_unconfirmed_edits_first(
    repos: Path, tmp_path: Path
) -> None:
    """A document typed in while the server is down and then closed: the close waits until
    the server holds the edit (unsent, it would be lost); closing it again, or one with
    nothing unconfirmed, returns at once."""
    async with _served(repos, tmp_path) as (server, client):
        doc = await client.open(ROOM)
        other = await client.open("demo/main:src/app.py")
        await server.kill()
        doc.insert(0, "typed offline, then closed\n")
        closing = asyncio.create_task(doc.close(timeout=20))
        await asyncio.sleep(0.3)
        assert not closing.done() and not doc.closed  # nothing confirmed: still open
        await server.start()
        await closing
        assert doc.closed
        assert (await stored_text(server.data_dir, ROOM)).startswith("typed offline")
        await asyncio.wait_for(other.close(), 1)  # nothing of its own to wait for
        await asyncio.wait_for(doc.close(), 1)


async def test_a_close_that_may_not_wait_closes_at_once(repos: Path, tmp_path: Path) -> None:
    """``close(timeout=0)``: for a caller that must not wait for a server that is away (a
    syncer shutting down); the edits not confirmed are dropped with the document."""
    async with _served(repos, tmp_path) as (server, client):
        doc = await client.open(ROOM)
        await server.kill()
        doc.insert(0, "never sent\n")
        await asyncio.wait_for(doc.close(timeout=0), 1)
        assert doc.closed


async def test_a_syncers_documents_close_at_once_with_the_server_away(
    repos: Path, tmp_path: Path
) -> None:
    """The disk syncer's documents close at once at its shutdown, the server away and
    edits unconfirmed: the shutdown goes on to close the rest."""
    from collab.disk.documents import Documents

    async with _served(repos, tmp_path) as (server, client):
        docs = Documents(client, "demo", "main", lambda path: None)
        opened = [await docs.open(f"f{i}.txt") for i in range(3)]
        for doc in opened:
            await doc.synced.wait()
        await server.kill()
        for doc in opened:
            doc.insert(0, "offline edit\n")
        await asyncio.wait_for(docs.close_all(), 2)
        assert all(doc.closed for doc in opened) and len(docs) == 0
