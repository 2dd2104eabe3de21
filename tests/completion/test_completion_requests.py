"""What a completion request is answered against: the cache key, the cursor the client means
(``before``), index checks and units, and accepting into a document near its size cap."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from fake_backends import FakeBackend

from collab import Client, ClientError
from collab.completion.metrics import percentile
from collab.live.offsets import codepoint_to_utf16
from protocol.errors import ErrorCode

APP = "demo/main:src/app.py"
UTIL = "demo/main:src/util.py"
UNICODE = "demo/main:docs/unicode.txt"


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_a_deletion_is_not_answered_from_the_cache(make_server: Any) -> None:
    backend = FakeBackend(None)  # "<n>" for the n-th call
    async with make_server(backend) as server, Client(server.url, user="alice") as a:
        doc = await a.open(APP)
        first = await a.complete(APP, 20)
        doc.delete(0, 10)  # the state vector stays as it was
        await a.flush()
        await eventually(lambda: str(server.rooms.get_key(APP).text) == str(doc))
        second = await a.complete(APP, 20)
        assert first["text"] == "<1>"
        assert second["cached"] is False and second["text"] == "<2>"
        again = await a.complete(APP, 20)
        assert again["cached"] is True and again["text"] == "<2>"


async def test_before_moves_the_request_to_where_the_client_s_cursor_is(
    make_server: Any,
) -> None:
    backend = FakeBackend("value + 1")
    async with (
        make_server(backend) as server,
        Client(server.url, user="alice") as a,
        Client(server.url, user="bob") as b,
    ):
        da = await a.open(UTIL)
        db = await b.open(UTIL)
        text = str(da)
        cursor = text.index("value * 2")
        before = text[max(0, cursor - 64) : cursor]
        db.insert(0, "# doubles a value\n")  # reaches the server before alice's request
        await b.flush()
        reply = await a.call("complete", doc=UTIL, index=cursor, before=before)
        assert reply["index"] == cursor + len("# doubles a value\n")
        await a.accept(reply)
        expected = "# doubles a value\ndef double(value):\n    return value + 1value * 2\n"
        await da.wait_for(lambda t: t == expected)

        # the text before the cursor is gone: refused, the document is left alone
        with pytest.raises(ClientError) as err:
            await a.call("complete", doc=UTIL, index=5, before="nowhere in the text")
        assert err.value.code == ErrorCode.CONFLICT
        assert "changed" in err.value.message
        with pytest.raises(ClientError) as err:
            await a.call("complete", doc=UTIL, index=5, before="x" * 65)
        assert err.value.code == ErrorCode.MALFORMED

        # without before, the index is taken as it is
        plain = await a.call("complete", doc=UTIL, index=3)
        assert plain["index"] == 3
        # the client sends what it sees before the cursor when given a Document
        now = str(da)
        sent = await a.complete(da, len(now) - 1)
        assert sent["index"] == len(now) - 1
        assert backend.prompts[-1].rendered.prefix.endswith(now[:-1][-20:])


async def test_before_in_utf16_units_and_a_cut_surrogate_pair(make_server: Any) -> None:
    backend = FakeBackend("!")
    async with (
        make_server(backend) as server,
        Client(server.url, user="alice") as a,
        Client(server.url, user="bob") as b,
    ):
        da = await a.open(UNICODE)
        db = await b.open(UNICODE)
        text = str(da)
        cursor = text.index(" emoji")
        units = codepoint_to_utf16(text, cursor)
        # as a JavaScript client cuts it: the first unit is the low half of the emoji
        before = "\udf89" + text[cursor - 1 : cursor]
        db.insert(0, "🙂")
        await b.flush()
        await eventually(lambda: str(server.rooms.get_key(UNICODE).text).startswith("🙂"))
        body = {"doc": UNICODE, "index": units, "unit": "utf16", "before": before}
        base = server.url.replace("ws://", "http://")
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{base}/api/complete?user=alice", json=body) as response,
        ):
            assert response.status == 200, await response.text()
            reply = (await response.json())["value"]
        assert reply["index"] == units + 2  # one more pair before it
        assert reply["text"] == "!"


async def test_a_refused_index_leaves_no_request_behind(make_server: Any) -> None:
    async with make_server(FakeBackend()) as server, Client(server.url, user="alice") as a:
        doc = await a.open(APP)
        for index in (10_000, -1):
            with pytest.raises(ClientError) as err:
                await a.complete(APP, index)
            assert err.value.code == ErrorCode.MALFORMED
        with pytest.raises(ClientError):
            await a.call("complete", doc=APP, index=0, before="not there")
        assert server.completion._active == {}
        await a.complete(doc, 0)
        assert server.completion._active == {}


async def test_utf16_index_past_the_end_is_refused(make_server: Any) -> None:
    async with make_server(FakeBackend()) as server, Client(server.url, user="alice") as a:
        doc = await a.open(UNICODE)
        length = codepoint_to_utf16(str(doc), len(str(doc)))
        with pytest.raises(ClientError) as err:
            await a.complete(UNICODE, length + 1, unit="utf16")
        assert err.value.code == ErrorCode.MALFORMED
        with pytest.raises(ClientError) as err:
            await a.complete(UNICODE, -1, unit="utf16")
        assert err.value.code == ErrorCode.MALFORMED
        at_end = await a.complete(UNICODE, length, unit="utf16")
        assert at_end["index"] == length


async def test_accept_answers_in_the_request_s_unit(make_server: Any) -> None:
    async with make_server(FakeBackend("✓")) as server, Client(server.url, user="alice") as a:
        doc = await a.open(UNICODE)
        text = str(doc)
        units = codepoint_to_utf16(text, text.index(" emoji"))
        reply = await a.complete(UNICODE, units, unit="utf16")
        accepted = await a.accept(reply)
        assert reply["index"] == accepted["index"] == units
        plain = await a.complete(UNICODE, 3)
        assert (await a.accept(plain))["index"] == 3


async def test_accept_past_the_document_cap_is_refused(make_server: Any) -> None:
    async with (
        make_server(FakeBackend("x" * 40), max_document=80) as server,
        Client(server.url, user="alice") as a,
    ):
        doc = await a.open(APP)  # 52 bytes
        reply = await a.complete(doc, 0)
        with pytest.raises(ClientError) as err:
            await a.accept(reply)
        assert err.value.code == ErrorCode.DOCUMENT_FULL
        assert str(server.rooms.get_key(APP).text) == str(doc)
        fits = await a.accept(reply, length=20)  # the offer stays: a part may fit
        assert fits["text"] == "x" * 20


def test_percentiles_are_nearest_rank() -> None:
    assert percentile([], 0.5) == 0.0
    assert percentile([7.0], 0.99) == 7.0
    two = [1.0, 2.0]
    assert (percentile(two, 0.5), percentile(two, 0.9)) == (1.0, 2.0)
    ten = [float(n) for n in range(10, 0, -1)]  # 1..10, unsorted
    assert (percentile(ten, 0.5), percentile(ten, 0.9), percentile(ten, 0.99)) == (5, 9, 10)
    four = [1.0, 2.0, 3.0, 4.0]
    assert (percentile(four, 0.25), percentile(four, 0.5), percentile(four, 0.75)) == (1, 2, 3)
    hundred = [float(n) for n in range(1, 101)]
    assert (percentile(hundred, 0.5), percentile(hundred, 0.99)) == (50, 99)


async def test_a_timeout_logs_no_unretrieved_future(
    make_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    backend = FakeBackend("x", delay=5.0)
    async with (
        make_server(backend, completion_timeout=0.2) as server,
        Client(server.url, user="alice") as a,
    ):
        doc = await a.open(APP)
        for index in range(2):
            with pytest.raises(ClientError) as err:
                await a.complete(doc, index)
            assert err.value.code == ErrorCode.TIMEOUT
        await asyncio.sleep(0.1)
        gc.collect()
        await asyncio.sleep(0.05)
    assert "never retrieved" not in caplog.text


async def test_one_user_s_requests_in_flight_are_capped(make_server: Any) -> None:
    """One user with many connections cannot fill the queue: past ``completion_per_user``
    requests in flight they are refused (4029), and others are still served."""
    backend = FakeBackend("slow", delay=1.0, capacity=1)
    async with make_server(backend, completion_per_user=2) as server:
        clients = [Client(server.url, user="mallory") for _ in range(3)]
        for client in clients:
            await client.__aenter__()
        try:
            for client in clients:
                await client.open(APP)
            asking = [asyncio.create_task(c.complete(APP, 0)) for c in clients[:2]]
            await eventually(lambda: len(server.completion._active) == 2)
            with pytest.raises(ClientError) as err:
                await clients[2].complete(APP, 0)
            assert err.value.code == ErrorCode.RATE_LIMITED
            async with Client(server.url, user="alice") as a:  # another user is served
                await a.open(APP)
                backend.delay = 0.0
                assert (await a.complete(APP, 1))["text"] == "slow"
            assert [r["text"] for r in await asyncio.gather(*asking)] == ["slow", "slow"]
            assert (await clients[2].complete(APP, 0))["text"] == "slow"  # room again
        finally:
            for client in clients:
                await client.__aexit__(None, None, None)
