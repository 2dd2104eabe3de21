"""A sync step 2 is the server's word that it has what the peer sent before its step 1: an
editor may count on it (and drop its copy of the document), so it is sent only once those
updates are durable."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pycrdt import Doc, Text
from yjsclient import YjsPeer

from collab import CollabServer
from collab.store.base import Fence
from protocol.yjs import SyncStep1, encode_message

ROOM = "demo/main:README.md"


async def test_a_step_1_is_answered_once_the_updates_before_it_are_durable(
    server: CollabServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = server.url.replace("ws://", "http://")
    async with YjsPeer(base, ROOM, user="ann") as peer:
        await asyncio.wait_for(peer.synced.wait(), 5)
        gate = asyncio.Event()
        append = server.store.append

        async def held(
            doc_id: str, update: bytes, fence: Fence | None = None, author: str | None = None
        ) -> Any:
            await gate.wait()
            return await append(doc_id, update, fence, author)

        monkeypatch.setattr(server.store, "append", held)
        try:
            peer.text.insert(0, "typed;")
            await asyncio.sleep(0.05)  # (the peer sends its update from a task)
            peer.synced.clear()
            await peer.send(encode_message(SyncStep1(peer.doc.get_state())))
            await asyncio.sleep(0.3)
            assert not peer.synced.is_set()  # not durable yet: no answer
        finally:
            gate.set()
        await asyncio.wait_for(peer.synced.wait(), 5)
        stored = await server.store.load(ROOM)
        assert stored is not None
        doc: Doc[Any] = Doc()
        stored.apply_to(doc)
        assert str(doc.get("source", type=Text)).startswith("typed;")
