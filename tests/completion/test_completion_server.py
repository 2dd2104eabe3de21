"""Completions end to end on a real server with the embedded worker and real clients."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from fake_backends import FakeBackend
from prometheus_client.parser import text_string_to_metric_families

from collab import Client, ClientError, CollabServer
from collab.live.offsets import codepoint_to_utf16
from collab.live.origin import Origin
from collab.live.room import Room
from collab.server.auth import Identity, Role, TokenAuthenticator
from protocol.errors import ErrorCode

APP = "demo/main:src/app.py"
UTIL = "demo/main:src/util.py"
UNICODE = "demo/main:docs/unicode.txt"
SECRET = b"completion-secret-0123456789"


def record_changes(room: Room) -> list[tuple[Origin, str | None]]:
    seen: list[tuple[Origin, str | None]] = []

    def listener(_room: Room, origin: Origin, author: Identity | None) -> None:
        seen.append((origin, author.user if author else None))

    room.listeners.append(listener)
    return seen


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_request_reply_accept_reaches_everyone_attributed_to_ai(make_server: Any) -> None:
    backend = FakeBackend("value + 1", delay=0.2)
    async with (
        make_server(backend) as server,
        Client(server.url, user="alice") as a,
        Client(server.url, user="bob") as b,
    ):
        da = await a.open(UTIL)
        db = await b.open(UTIL)
        seen = record_changes(server.rooms.get_key(UTIL))
        original = str(da)
        cursor = original.index("value * 2")
        asking = asyncio.create_task(a.complete(da, cursor))
        await backend.started.wait()
        # while the model runs, bob edits before the cursor and exactly at it
        db.insert(cursor, "X")
        db.insert(0, "# doubles\n")
        reply = await asking
        assert reply["text"] == "value + 1"
        assert reply["index"] == cursor + len("# doubles\n")  # the anchor followed the edit
        assert reply["cached"] is False
        latency = reply["latency"]
        assert set(latency) == {"queue_ms", "prompt_ms", "model_ms", "total_ms"}
        assert latency["model_ms"] >= 150
        assert latency["total_ms"] >= latency["model_ms"]
        prompt = backend.prompts[0].rendered
        assert prompt.prefix == original[:cursor] and prompt.suffix == original[cursor:]

        accepted = await a.accept(reply)
        assert accepted["text"] == "value + 1"
        expected = "# doubles\ndef double(value):\n    return value + 1Xvalue * 2\n"
        assert await db.wait_for(lambda t: t == expected) == expected
        assert await da.wait_for(lambda t: t == expected) == expected
        async with Client(server.url, user="carol") as c:
            assert str(await c.open(UTIL)) == expected
        assert (Origin.AI, "alice") in seen
        assert (Origin.CLIENT, "bob") in seen
        with pytest.raises(ClientError) as err:  # an offer is accepted once
            await a.accept(reply)
        assert err.value.code == ErrorCode.NOT_FOUND
        metrics = await a.call("complete.metrics")
        assert metrics["counts"]["accepted"] == 1
        assert metrics["acceptance_rate"] == 1.0


async def test_a_completion_whose_preceding_text_was_deleted_is_refused(
    make_server: Any,
) -> None:
    """Bob deletes the line alice asked a completion at the end of: accepting it is refused
    (4015, ask again) and inserts nothing; a deletion further before it does not matter."""
    async with (
        make_server(FakeBackend("value + 1")) as server,
        Client(server.url, user="alice") as a,
        Client(server.url, user="bob") as b,
    ):
        doc, bobs = await a.open(UTIL), await b.open(UTIL)
        cursor = str(doc).index("value * 2")
        reply = await a.complete(doc, cursor)
        bobs.delete(0, len("def "))  # further before it
        await b.flush()
        await doc.wait_for(lambda t: t.startswith("double"))
        accepted = await a.accept(reply)
        assert accepted["text"] == "value + 1"
        cursor = str(doc).index("value + 1") + len("value + 1")
        reply = await a.complete(doc, cursor)
        line = str(bobs).index("    return")
        bobs.delete(line, cursor - line)  # the text the completion goes on from
        await b.flush()
        await doc.wait_for(lambda t: "return" not in t)
        text = str(doc)
        with pytest.raises(ClientError) as err:
            await a.accept(reply)
        assert err.value.code == ErrorCode.CONFLICT
        await asyncio.sleep(0.2)
        assert str(doc) == str(bobs) == text


async def test_text_typed_through_a_completion_is_not_doubled_by_accepting_it(
    make_server: Any,
) -> None:
    """Alice types the first characters of the completion shown at her cursor, then accepts
    it: the rest goes in after what she typed (not the whole completion before it), and
    nothing, once she typed it all. Other text typed there stays after the completion."""
    async with (
        make_server(FakeBackend("value + 1")) as server,
        Client(server.url, user="alice") as a,
        Client(server.url, user="bob") as b,
    ):
        doc, bobs = await a.open(UTIL), await b.open(UTIL)
        original = str(doc)
        cursor = original.index("value * 2")

        reply = await a.complete(doc, cursor)
        doc.insert(cursor, "val")
        await a.flush()
        accepted = await a.accept(reply)
        assert accepted == {"doc": UTIL, "index": cursor + 3, "text": "ue + 1"}
        once = original[:cursor] + "value + 1" + original[cursor:]
        assert await bobs.wait_for(lambda t: t == once) == once

        reply = await a.complete(doc, cursor + len("value + 1"))
        doc.insert(cursor + len("value + 1"), "value + 1")
        await a.flush()
        accepted = await a.accept(reply)
        assert accepted == {"doc": UTIL, "index": cursor + 18, "text": ""}
        twice = original[:cursor] + "value + 1value + 1" + original[cursor:]
        await asyncio.sleep(0.2)
        assert str(bobs) == str(doc) == twice

        reply = await a.complete(doc, cursor)  # typed whole, and more: nothing to insert
        doc.insert(cursor, "value + 1 ")
        await a.flush()
        accepted = await a.accept(reply)
        assert accepted == {"doc": UTIL, "index": cursor + 10, "text": ""}
        doc.delete(cursor, len("value + 1 "))
        await a.flush()
        await bobs.wait_for(lambda t: t == twice)

        reply = await a.complete(doc, cursor)
        bobs.insert(cursor, "X")
        await b.flush()
        await doc.wait_for(lambda t: "X" in t)
        accepted = await a.accept(reply)
        assert accepted == {"doc": UTIL, "index": cursor, "text": "value + 1"}
        thrice = original[:cursor] + "value + 1X" + twice[cursor:]
        assert await bobs.wait_for(lambda t: t == thrice) == thrice
        assert isinstance(server, CollabServer)


async def test_anchor_survives_multibyte_text_and_utf16_positions(make_server: Any) -> None:
    backend = FakeBackend("✓", delay=0.1)
    async with (
        make_server(backend) as server,
        Client(server.url, user="alice") as a,
        Client(server.url, user="bob") as b,
    ):
        da = await a.open(UNICODE)
        db = await b.open(UNICODE)
        text = str(da)
        cursor = text.index("🎉") + 1  # code points
        asking = asyncio.create_task(a.complete(da, codepoint_to_utf16(text, cursor), unit="utf16"))
        await backend.started.wait()
        db.insert(0, "ñ🙂")
        db.insert(len(str(db)), "…")
        reply = await asking
        await db.wait_for(lambda t: t.startswith("ñ🙂"))
        await da.wait_for(lambda t: t.startswith("ñ🙂") and t.endswith("…"))
        now = str(da)
        assert reply["index"] == codepoint_to_utf16(now, now.index("🎉") + 1)
        await a.accept(reply)
        expected = "ñ🙂héllo wörld, 世界, 🎉✓ emoji\n…"
        await db.wait_for(lambda t: t == expected)
        await da.wait_for(lambda t: t == expected)


async def test_identical_request_on_same_version_is_cached(make_server: Any) -> None:
    backend = FakeBackend(None)
    async with make_server(backend) as server, Client(server.url, user="alice") as a:
        doc = await a.open(APP)
        first = await a.complete(doc, 5)
        second = await a.complete(doc, 5)
        assert second["cached"] is True and second["text"] == first["text"] == "<1>"
        assert second["latency"]["model_ms"] == 0
        assert len(backend.prompts) == 1
        other_place = await a.complete(doc, 6)
        assert other_place["cached"] is False
        doc.insert(0, "#")
        await a.flush()
        changed = await a.complete(doc, 6)  # same position, new version
        assert changed["cached"] is False and changed["text"] == "<3>"
        assert (await a.call("complete.metrics"))["counts"]["cached"] == 1


async def test_newer_request_cancels_older_and_stops_its_generation(make_server: Any) -> None:
    backend = FakeBackend("late", delays=[10.0, 0.0])
    async with make_server(backend) as server, Client(server.url, user="alice") as a:
        doc = await a.open(APP)
        older = asyncio.create_task(a.complete(doc, 3))
        await backend.started.wait()
        newer = await a.complete(doc, 4)
        assert newer["text"] == "late"
        with pytest.raises(ClientError) as err:
            await older
        assert err.value.code == ErrorCode.CANCELLED
        await eventually(lambda: backend.cancelled == 1)
        metrics = server.completion.snapshot()
        assert metrics["counts"]["superseded"] == 1


async def test_cancelled_job_waiting_for_a_worker_is_skipped(make_server: Any) -> None:
    backend = FakeBackend("done", delays=[0.5], capacity=1)
    async with (
        make_server(backend) as server,
        Client(server.url, user="alice") as a,
        Client(server.url, user="bob") as b,
    ):
        da = await a.open(APP)
        db = await b.open(APP)
        running = asyncio.create_task(a.complete(da, 1))
        await backend.started.wait()
        waiting = asyncio.create_task(b.complete(db, 2))
        await eventually(lambda: len(server.completion.pool.pending) == 1)
        assert (await b.call("complete.cancel", doc=APP))["cancelled"] is True
        with pytest.raises(ClientError) as err:
            await waiting
        assert err.value.code == ErrorCode.CANCELLED
        assert (await running)["text"] == "done"
        await asyncio.sleep(0.1)
        assert len(backend.prompts) == 1  # the cancelled job never reached the model


async def test_disconnect_cancels_the_request(make_server: Any) -> None:
    backend = FakeBackend("never", delay=10.0)
    async with make_server(backend) as server:
        async with Client(server.url, user="alice") as a:
            doc = await a.open(APP)
            before = str(doc)
            asking = asyncio.create_task(a.complete(doc, 3))
            await backend.started.wait()
        with pytest.raises((ConnectionError, asyncio.CancelledError, ClientError)):
            await asking
        await eventually(lambda: backend.cancelled == 1)
        assert server.completion.snapshot()["counts"]["disconnected"] == 1
        assert not server.completion.pool.running
        async with Client(server.url, user="bob") as b:
            assert str(await b.open(APP)) == before


async def test_timeout_and_backend_failure_give_codes_and_leave_text(make_server: Any) -> None:
    slow = FakeBackend("x", delay=10.0)
    async with (
        make_server(slow, completion_timeout=0.3) as server,
        Client(server.url, user="alice") as a,
    ):
        doc = await a.open(APP)
        before = str(doc)
        with pytest.raises(ClientError) as err:
            await a.complete(doc, 3)
        assert err.value.code == ErrorCode.TIMEOUT
        await eventually(lambda: slow.cancelled == 1)
        assert str(server.rooms.get_key(APP).text) == before
    broken = FakeBackend(fail=True)
    async with make_server(broken) as server, Client(server.url, user="alice") as a:
        doc = await a.open(APP)
        with pytest.raises(ClientError) as err:
            await a.complete(doc, 3)
        assert err.value.code == ErrorCode.UNAVAILABLE
        assert "model exploded" in err.value.message
        assert str(server.rooms.get_key(APP).text) == before
        assert server.completion.snapshot()["errors"] == {"UNAVAILABLE": 1}


async def test_no_worker_is_unavailable(make_server: Any) -> None:
    async with make_server(None) as server, Client(server.url, user="alice") as a:
        doc = await a.open(APP)
        with pytest.raises(ClientError) as err:
            await a.complete(doc, 0)
        assert err.value.code == ErrorCode.UNAVAILABLE


async def test_rate_limit_and_bounded_queue(make_server: Any) -> None:
    async with (
        make_server(FakeBackend(), completion_rate=0.01, completion_burst=2) as server,
        Client(server.url, user="alice") as a,
    ):
        doc = await a.open(APP)
        await a.complete(doc, 0)
        await a.complete(doc, 1)
        with pytest.raises(ClientError) as err:
            await a.complete(doc, 2)
        assert err.value.code == ErrorCode.RATE_LIMITED
    slow = FakeBackend("x", delay=10.0, capacity=1)
    async with make_server(slow, completion_queue=1) as server:
        clients = [Client(server.url, user=f"u{i}") for i in range(3)]
        for client in clients:
            await client.connect()
        try:
            docs = [await client.open(APP) for client in clients]
            first = asyncio.create_task(clients[0].complete(docs[0], 0))
            await slow.started.wait()
            second = asyncio.create_task(clients[1].complete(docs[1], 0))
            await eventually(lambda: len(server.completion.pool.pending) == 1)
            with pytest.raises(ClientError) as err:
                await clients[2].complete(docs[2], 0)
            assert err.value.code == ErrorCode.RATE_LIMITED
            assert "queue" in err.value.message
            first.cancel()
            second.cancel()
        finally:
            for client in clients:
                await client.close()


async def test_requests_need_an_open_document_and_a_valid_index(make_server: Any) -> None:
    async with (
        make_server(FakeBackend(), completion_max_chars=4) as server,
        Client(server.url, user="alice") as a,
        Client(server.url, user="bob") as b,
    ):
        await b.open(APP)  # loaded, but alice has not opened it
        with pytest.raises(ClientError) as err:
            await a.complete(APP, 0)
        assert err.value.code == ErrorCode.UNKNOWN_DOCUMENT
        doc = await a.open(APP)
        with pytest.raises(ClientError) as err:
            await a.complete(doc, 10_000)
        assert err.value.code == ErrorCode.MALFORMED
        with pytest.raises(ClientError) as err:
            await a.complete(doc, 0, mode="paragraph")
        assert err.value.code == ErrorCode.MALFORMED
        capped = await a.complete(doc, 0)
        assert capped["text"] == "COMP"  # completion_max_chars


async def test_prompt_carries_other_files_of_the_branch(make_server: Any) -> None:
    backend = FakeBackend()
    async with make_server(backend) as server, Client(server.url, user="alice") as a:
        util = await a.open(UTIL)
        unicode = await a.open(UNICODE)
        app = await a.open(APP)
        util.insert(0, "# edited just now\n")
        await a.flush()
        await a.complete(app, 0)
        context = backend.prompts[0].rendered.context
        paths = [c.path for c in context]
        assert paths[0] == "src/util.py"  # recently edited first
        assert "docs/unicode.txt" in paths
        assert context[0].text.startswith("# edited just now\n")
        assert str(unicode)  # still open


async def test_http_json_and_metrics(make_server: Any) -> None:
    backend = FakeBackend("!")
    async with (
        make_server(backend) as server,
        Client(server.url, user="alice") as a,
        aiohttp.ClientSession() as http,
    ):
        doc = await a.open(APP)
        base = server.url.replace("ws://", "http://")
        async with http.post(
            f"{base}/api/complete?user=alice", json={"doc": APP, "index": 0}
        ) as response:
            assert response.status == 200
            reply = (await response.json())["value"]
        assert reply["text"] == "!"
        async with http.post(
            f"{base}/api/complete.accept?user=alice", json={"id": reply["id"]}
        ) as response:
            assert response.status == 200
        await doc.wait_for(lambda t: t.startswith("!import"))
        async with http.post(
            f"{base}/api/complete?user=alice", json={"doc": "demo/nope:src/app.py", "index": 0}
        ) as response:
            assert response.status == 404
            assert (await response.json())["error"]["code"] == ErrorCode.NOT_FOUND
        async with http.get(f"{base}/metrics") as response:  # Prometheus text, from loopback
            assert response.status == 200
            samples = {
                (sample.name, tuple(sorted(sample.labels.items()))): sample.value
                for family in text_string_to_metric_families(await response.text())
                for sample in family.samples
            }
        assert samples["collab_completion_events_total", (("event", "accepted"),)] == 1
        # amounts, not events: counters of their own
        assert not [labels for _name, labels in samples if labels == (("event", "prompt_tokens"),)]
        assert samples["collab_completion_acceptance_ratio", ()] == 1.0
        assert samples["collab_completion_latency_seconds_count", (("part", "total"),)] == 1
        assert samples["collab_completion_latency_seconds_sum", (("part", "total"),)] > 0
        quantile = (("part", "total"), ("quantile", "0.5"))
        assert samples["collab_completion_latency_seconds", quantile] > 0
        assert samples["collab_completion_workers", ()] == 1
        figures = await a.call("complete.metrics")  # the same figures, as JSON
        assert figures["counts"]["accepted"] == 1
        prompt_tokens = figures["counts"]["prompt_tokens"]
        assert samples["collab_completion_prompt_tokens_total", ()] == prompt_tokens
        assert figures["workers"][0]["name"] == "embedded"


async def test_read_only_user_can_ask_but_not_accept(make_server: Any) -> None:
    tokens = TokenAuthenticator(SECRET)
    async with make_server(FakeBackend(), secret=SECRET) as server:
        reader = tokens.mint(user="rita", repo="demo", role=Role.READ)
        async with Client(server.url, token=reader) as r:
            doc = await r.open(APP)
            before = str(doc)
            reply = await r.complete(doc, 0)
            with pytest.raises(ClientError) as err:
                await r.accept(reply)
            assert err.value.code == ErrorCode.READ_ONLY
            assert str(server.rooms.get_key(APP).text) == before
        other = tokens.mint(user="olga", repo="other", role=Role.WRITE)
        async with Client(server.url, token=other) as o:
            with pytest.raises(ClientError) as err:
                await o.complete(APP, 0)
            assert err.value.code == ErrorCode.FORBIDDEN


async def test_partial_accept(make_server: Any) -> None:
    async with (
        make_server(FakeBackend("alpha beta")) as server,
        Client(server.url, user="alice") as a,
    ):
        doc = await a.open(APP)
        reply = await a.complete(doc, 0)
        result = await a.accept(reply, length=6)
        assert result == {"doc": APP, "index": 0, "text": "alpha "}
        await doc.wait_for(lambda t: t.startswith("alpha import os"))
        assert isinstance(server, CollabServer)
