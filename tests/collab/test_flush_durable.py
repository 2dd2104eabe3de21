"""``Client.flush()`` means durable, edits made offline included: a ``kill -9`` right after
it returns never loses what it acknowledged."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from serverproc import ServerProcess
from test_crash import stored_text

from collab import Client

ROOM = "demo/main:README.md"
# a crash loop: bounded by default, for a suite that stays fast; more with COLLAB_FLUSH_TRIES
TRIES = int(os.environ.get("COLLAB_FLUSH_TRIES", "20"))


@pytest.mark.slow
async def test_flush_covers_edits_made_offline_across_kill_9(repos: Path, tmp_path: Path) -> None:
    server = ServerProcess(repos, tmp_path / "data", extra_args=("--completion-backend", "none"))
    await server.start()
    client = Client(server.url, user="ann", min_backoff=0.01, max_backoff=0.05)
    markers: list[str] = []
    try:
        await client.connect()
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
    finally:
        await client.close()
        await server.stop()
