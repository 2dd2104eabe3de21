"""Completions over plain HTTP, with no WebSocket session: the server opens the document
itself, and keeps it loaded while the answer may still be accepted. Empty answers too have
an id, and accepting one inserts nothing."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
from fake_backends import FakeBackend

from collab import Client, CollabServer
from collab.completion.service import HELD_OFFERS, OFFER_TTL
from collab.server.auth import Role, TokenAuthenticator
from protocol.errors import ErrorCode

APP = "demo/main:src/app.py"
SECRET = b"completion-secret-0123456789"


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


async def test_one_person_cannot_keep_more_than_a_few_documents_loaded_with_offers(
    make_server: Any,
) -> None:
    """Offers over HTTP keep their documents loaded; one person asking about 30 documents
    keeps only the newest :data:`HELD_OFFERS` loaded: the oldest offers are dropped, and
    accepting one answers 4004."""
    async with make_server(FakeBackend("!")) as server:
        offers = []
        for n in range(30):
            doc = f"demo/main:made/up/{n}.py"
            offers.append(await _post(server, "complete", {"doc": doc, "index": 0}))
        loaded = [n for n in range(30) if server.rooms.get_key(f"demo/main:made/up/{n}.py")]
        assert loaded[-HELD_OFFERS:] == list(range(30 - HELD_OFFERS, 30))
        await asyncio.sleep(2 * server.config.grace)
        assert len(server.rooms) == HELD_OFFERS
        base = server.url.replace("ws://", "http://")
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{base}/api/complete.accept?user=alice", json={"id": offers[0]["id"]}) as r,
        ):
            assert (await r.json())["error"]["code"] == ErrorCode.NOT_FOUND
        accepted = await _post(server, "complete.accept", {"id": offers[-1]["id"]})
        assert accepted["text"] == "!"


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


async def _abort_after_start(server: CollabServer, backend: FakeBackend, path: str) -> None:
    """Ask at ``path`` and close the connection once the backend has the job (as the web
    editor's AbortController does when the cursor moves)."""
    base = server.url.replace("ws://", "http://")
    async with aiohttp.ClientSession() as http:

        async def ask() -> None:
            body = {"doc": APP, "index": 0}
            async with http.post(f"{base}{path}?user=alice", json=body) as response:
                await response.read()

        asking = asyncio.create_task(ask())
        await asyncio.wait_for(backend.started.wait(), 5)
        asking.cancel()
        await asyncio.gather(asking, return_exceptions=True)


@pytest.mark.parametrize("path", ["/api/complete", "/api/complete/stream"])
async def test_closing_an_http_request_cancels_its_job(
    make_server: Any, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    backend = FakeBackend("SLOW", delay=5.0, capacity=1)
    async with make_server(backend) as server:
        await _abort_after_start(server, backend, path)
        async with asyncio.timeout(2):  # well before the backend's 5 s
            while backend.cancelled == 0:
                await asyncio.sleep(0.02)
        assert backend.finished == 0
        completion = server.completion
        async with asyncio.timeout(2):
            while completion.pool.running:
                await asyncio.sleep(0.02)
        counts = completion.snapshot()["counts"]
        assert counts.get("shown", 0) == 0 and counts["disconnected"] == 1
        assert completion.snapshot()["offers"] == 0
        await _unloaded(server, APP)  # the document is given back
        backend.delay = 0.0  # the slot is free again
        assert (await _post(server, "complete", {"doc": APP, "index": 0}))["text"] == "SLOW"
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


@pytest.mark.parametrize("path", ["/api/complete", "/api/complete/stream"])
async def test_only_those_who_may_read_a_document_make_it_load(make_server: Any, path: str) -> None:
    """A completion over HTTP loads its document: a token of another repository, a worker's
    or a monitor's is refused (4003) before anything is loaded; a reader's is answered."""
    tokens = TokenAuthenticator(SECRET)
    refused = [
        tokens.mint(user="olga", repo="other", role=Role.WRITE),
        tokens.mint(user="gpu1", repo="*", role=Role.WORKER),
        tokens.mint(user="prom", repo="*", role=Role.METRICS),
    ]
    reader = tokens.mint(user="rita", repo="demo", role=Role.READ)
    async with (
        make_server(FakeBackend("!"), secret=SECRET) as server,
        aiohttp.ClientSession() as http,
    ):
        base_url = server.url.replace("ws://", "http://") + path
        for token in refused:
            headers = {"Authorization": f"Bearer {token}"}
            async with http.post(base_url, json={"doc": APP, "index": 0}, headers=headers) as r:
                assert r.status == 403
                assert (await r.json())["error"]["code"] == ErrorCode.FORBIDDEN
        await asyncio.sleep(0.1)
        assert server.rooms.get_key(APP) is None  # never loaded
        headers = {"Authorization": f"Bearer {reader}"}
        async with http.post(base_url, json={"doc": APP, "index": 0}, headers=headers) as r:
            assert r.status == 200
            assert b'"text": "!"' in await r.read()
        assert server.rooms.get_key(APP) is not None  # a reader may read it: held for them
