"""Early answers: a completion's text streams to the client while it is generated (events
on ``/ws``, newline-delimited JSON over HTTP), and a single line still ends at its end."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from fake_backends import FakeBackend, StreamingFake

from collab import Client, ClientError
from collab.completion import Family, PromptParts, render
from collab.completion.executor import TextStream, settled
from collab.completion.worker import RemoteWorker
from protocol.errors import ErrorCode

APP = "demo/main:src/app.py"


async def test_ws_stream_events_arrive_before_the_answer_and_add_up_to_it(
    make_server: Any,
) -> None:
    backend = StreamingFake("return value + 1\nmore lines\n")
    async with make_server(backend) as server, Client(server.url, user="alice") as a:
        doc = await a.open(APP)
        reply = await a.call("complete", doc=APP, index=len(str(doc)), stream=7)
        pieces = []
        while not a.events.empty():
            event = a.events.get_nowait()
            assert event.topic == "complete.stream"
            assert event.data["stream"] == 7 and event.data["doc"] == APP
            pieces.append(event.data["text"])
        assert reply["text"] == "return value + 1"  # single line: cut at its end
        assert "".join(pieces) == reply["text"] and len(pieces) > 2
        assert backend.streamed == 1
        with pytest.raises(ClientError) as err:
            await a.call("complete", doc=APP, index=0, stream=[1])
        assert err.value.code == ErrorCode.MALFORMED


async def test_http_stream_is_ndjson_pieces_then_the_answer(make_server: Any) -> None:
    async with (
        make_server(StreamingFake("a, b)\n")) as server,
        Client(server.url, user="alice") as a,
        aiohttp.ClientSession() as http,
    ):
        doc = await a.open(APP)
        doc.insert(0, "f(")
        doc.insert(2, ")\n")
        await a.flush()
        base = server.url.replace("ws://", "http://")
        async with http.post(
            f"{base}/api/complete/stream?user=alice", json={"doc": APP, "index": 2}
        ) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "application/x-ndjson"
            lines = [json.loads(line) async for line in response.content]
        *pieces, last = lines
        answer = last["value"]
        assert answer["text"] == "a, b"  # the ")" after the cursor is not repeated
        assert "".join(p["text"] for p in pieces) == "a, b" and len(pieces) >= 2
        await a.accept(answer)
        await doc.wait_for(lambda t: t.startswith("f(a, b)\n"))
        async with http.post(
            f"{base}/api/complete/stream?user=alice", json={"doc": "demo/main:../x", "index": 0}
        ) as response:  # refused before any text: an ordinary error
            assert response.status == 400
            assert (await response.json())["error"]["code"] == ErrorCode.BAD_NAME


async def test_a_backend_that_does_not_stream_sends_its_text_once(make_server: Any) -> None:
    async with make_server(FakeBackend("x = 1")) as server, Client(server.url, user="al") as a:
        doc = await a.open(APP)
        reply = await a.call("complete", doc=APP, index=len(str(doc)), stream="s")
        event = a.events.get_nowait()
        assert reply["text"] == "x = 1"
        assert event.data == {"stream": "s", "doc": APP, "text": "x = 1"}


def test_settled_text_holds_back_what_may_still_be_cut() -> None:
    rendered = render(Family.QWEN_CODER, PromptParts("r", "p.py", "f(", ")\nnext"))
    assert settled("a, b", rendered, True, 100) == "a, b"
    assert settled("a, b)", rendered, True, 100) == "a, b"  # ")" may repeat the suffix
    assert settled("a, b)\nz", rendered, True, 100) == "a, b"  # the line ended: final
    assert settled("x<|file", rendered, False, 100) == "x"  # may begin a stop string
    assert settled("x<|file_sep|>y", rendered, False, 100) == "x"
    pieces: list[str] = []
    stream = TextStream(rendered, True, 100, pieces.append)
    for raw in ("a", "a,", "a, b", "a, b)", "a, b))", "a, b))\n"):
        stream.update(raw)
    assert "".join(pieces) == "a, b)"  # the finished text: "a, b))" less the repeated ")"


async def test_a_remote_worker_streams_through_the_worker_protocol(make_server: Any) -> None:
    backend = StreamingFake("total = a + b\n")
    async with make_server(None) as server, Client(server.url, user="alice") as a:
        worker = RemoteWorker(server.url, backend, user="gpu1")
        stop = asyncio.Event()
        running = asyncio.create_task(worker.run(stop))
        try:
            await asyncio.wait_for(worker.connected.wait(), 10)
            doc = await a.open(APP)
            reply = await a.call("complete", doc=APP, index=len(str(doc)), stream=1)
            pieces = [a.events.get_nowait().data["text"] for _ in range(a.events.qsize())]
            assert reply["text"] == "total = a + b" == "".join(pieces) and len(pieces) > 2
            key = backend.prompts[-1].cache_key  # the typist's key reached the worker
            await a.complete(doc, 0)
            assert key and backend.prompts[-1].cache_key == key
        finally:
            stop.set()
            await running


async def test_a_remote_worker_s_pieces_are_cut_to_the_engine_s_max_chars(
    make_server: Any,
) -> None:
    backend = StreamingFake("abcdefghijklmnop")  # the worker's own cap is its default
    async with (
        make_server(None, completion_max_chars=5) as server,
        Client(server.url, user="alice") as a,
    ):
        worker = RemoteWorker(server.url, backend, user="gpu1")
        stop = asyncio.Event()
        running = asyncio.create_task(worker.run(stop))
        try:
            await asyncio.wait_for(worker.connected.wait(), 10)
            doc = await a.open(APP)
            reply = await a.call("complete", doc=APP, index=len(str(doc)), stream=1)
            pieces = [a.events.get_nowait().data["text"] for _ in range(a.events.qsize())]
            assert reply["text"] == "abcde" == "".join(pieces)
        finally:
            stop.set()
            await running
