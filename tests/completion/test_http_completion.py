"""Completions over plain HTTP, with no WebSocket session: the server opens the document
itself, and keeps it loaded while the answer may still be accepted. Empty answers too have
an id, and accepting one inserts nothing."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
from fake_backends import FakeBackend

from collab import Client, CollabServer
from collab.completion.service import OFFER_TTL

APP = "demo/main:src/app.py"


async def _post(server: CollabServer, op: str, body: dict[str, Any]) -> dict[str, Any]:
    base = server.url.replace("ws://", "http://")
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{base}/api/{op}?user=alice", json=body) as response,
    ):
        answer: dict[str, Any] = await response.json()
        assert response.status == 200, answer
        return answer["value"]  # type: ignore[no-any-return]


async def _unloaded(server: CollabServer, key: str) -> None:
    async with asyncio.timeout(5):
        while server.rooms.get_key(key) is not None:
            await asyncio.sleep(0.02)


async def test_complete_and_accept_over_http_without_opening_the_document(
    make_server: Any,
) -> None:
    async with make_server(FakeBackend("# hi\n")) as server:
        assert server.rooms.get_key(APP) is None  # nobody has it open
        reply = await _post(server, "complete", {"doc": APP, "index": 0, "mode": "block"})
        assert reply["text"] == "# hi\n" and isinstance(reply["id"], str)
        assert server.rooms.get_key(APP) is not None  # held while it may be accepted
        accepted = await _post(server, "complete.accept", {"id": reply["id"]})
        assert accepted == {"doc": APP, "index": 0, "text": "# hi\n"}
        await _unloaded(server, APP)  # given back once accepted
        async with Client(server.url, user="bob") as bob:
            doc = await bob.open(APP)
            assert str(doc.text).startswith("# hi\nimport os\n")


async def test_an_http_offer_holds_its_document_until_it_expires(make_server: Any) -> None:
    async with make_server(FakeBackend("!")) as server:
        await _post(server, "complete", {"doc": APP, "index": 0})
        await asyncio.sleep(2 * server.config.grace)
        assert server.rooms.get_key(APP) is not None  # past the grace period: still held
        server.completion.sweep(time.monotonic() + OFFER_TTL + 1)
        await _unloaded(server, APP)


async def test_an_empty_completion_has_an_id_and_accepting_it_inserts_nothing(
    make_server: Any,
) -> None:
    async with make_server(FakeBackend("")) as server:
        reply = await _post(server, "complete", {"doc": APP, "index": 4})
        assert reply["text"] == "" and isinstance(reply["id"], str)
        await _unloaded(server, APP)  # nothing to accept: nothing held
        accepted = await _post(server, "complete.accept", {"id": reply["id"]})
        assert accepted == {"doc": APP, "index": 4, "text": ""}
        async with Client(server.url, user="alice") as alice:
            doc = await alice.open(APP)
            before = str(doc.text)
            offer = await alice.complete(doc, 0)
            assert offer["text"] == "" and offer["id"]
            assert (await alice.accept(offer))["text"] == ""
            await alice.flush()
            assert str(doc.text) == before
