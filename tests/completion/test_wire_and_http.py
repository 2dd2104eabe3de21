"""The /worker wire format, and the backend for OpenAI-compatible servers (a fake one here)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import socket
import threading
import time
from typing import Any

import msgpack
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from collab.completion import Cancelled, Family, Prompt, PromptParts, http_backend, render, wire
from collab.completion.executor import (
    Executor,
    JobOutput,
    JobSpec,
    TextStream,
    finish,
    settled,
)
from collab.completion.http_backend import MAX_ANSWER, HttpBackend, HttpBackendError
from collab.completion.prompts import ContextFile
from protocol.errors import ErrorCode, ProtocolError

SPEC = JobSpec(
    "j1", PromptParts("demo", "a.py", "pre", "suf", (ContextFile("b.py", "é🎉"),)), 32, True
)


def test_every_message_round_trips() -> None:
    output = JobOutput("text", 1.5, 2.0, 30.25, 7, "m", 1500, 1490)
    streaming = JobSpec("j2", SPEC.parts, 8, False, cache_key="typist", stream=True)
    for message in (
        wire.WorkerHello("w", "model", "qwen2.5-coder", 8),
        wire.WorkerWelcome(),
        wire.Job(SPEC),
        wire.Job(streaming),
        wire.CancelJob("j1"),
        wire.Chunk("j2", "te"),
        wire.Done("j1", output),
        wire.Failed("j1", ErrorCode.CANCELLED, "cancelled"),
    ):
        assert wire.decode(wire.encode(message)) == message


@settings(max_examples=200, deadline=None)
@given(
    st.binary(max_size=200)
    | st.dictionaries(st.text(max_size=8), st.integers(-(2**63), 2**63 - 1) | st.text())
)
def test_malformed_messages_raise_protocol_error(data: bytes | dict[str, Any]) -> None:
    raw = data if isinstance(data, bytes) else msgpack.packb(data)
    with contextlib.suppress(ProtocolError):
        wire.decode(raw)


def test_bad_fields_are_refused() -> None:
    with pytest.raises(ProtocolError):
        wire.decode(
            msgpack.packb({"t": "hello", "name": "w", "model": "m", "family": "f", "capacity": 0})
        )
    with pytest.raises(ProtocolError):
        wire.decode(msgpack.packb({"t": "cancel", "id": 3}))
    with pytest.raises(ProtocolError):
        wire.decode(msgpack.packb({"t": "job", "id": "x", "parts": {"context": [[1]]}}))


class FakeOpenAI:
    """``/v1/models`` and ``/v1/completions`` as vLLM answers them."""

    def __init__(
        self, delay: float = 0.0, flood: int = 0, answer: str = "events", port: int = 0
    ) -> None:
        self.port = port
        self.delay = delay
        self.flood = flood  # stream this many one-character events, whatever max_tokens says
        # "events"; "huge": events of 1,000 characters, one every 50 ms, until stopped;
        # "page": an HTML page, as a proxy in front of a stopped model server answers;
        # "null", "surrogate", "latin1", "big": odd JSON answers (see ``completions``)
        self.answer = answer
        self.bodies: list[dict[str, Any]] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> FakeOpenAI:
        app = web.Application()
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/completions", self.completions)
        self.runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": "Qwen/Qwen2.5-Coder-1.5B"}]})

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        if body["prompt"].endswith("<|fim_middle|>boom"):
            return web.json_response({"error": "bad"}, status=500)
        await asyncio.sleep(self.delay)
        usage = {"completion_tokens": 3, "prompt_tokens": 40}
        usage["prompt_tokens_details"] = {"cached_tokens": 32}  # as vLLM reports them
        if self.answer == "page":
            return web.Response(text="<html>\n<body>Bad gateway</body>\n</html>\n")
        odd = {  # answers as they were seen from servers, or could be
            "null": b'{"choices": [{"text": null}]}',
            "surrogate": b'{"choices": [{"text": "a\\ud800b"}]}',
            "latin1": '{"choices": [{"text": "caf\u00e9"}]}'.encode("latin-1"),
            "big": b'{"choices": [{"text": "' + b"x" * (5 * 1024 * 1024) + b'"}]}',
        }
        if self.answer in odd:
            return web.Response(body=odd[self.answer], content_type="application/json")
        if not body["stream"]:
            return web.json_response({"choices": [{"text": "a + b"}], "usage": usage})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if self.answer == "split":  # a character past U+FFFF in two events, as JSON escapes
            for piece in ('"ok \\ud83d"', '"\\ude00 done"', '"\\ud83d"'):
                await response.write(f'data: {{"choices": [{{"text": {piece}}}]}}\n\n'.encode())
            await response.write(b"data: [DONE]\n\n")
            return response
        if self.answer == "huge":
            event = f"data: {json.dumps({'choices': [{'text': 'b' * 1000}]})}\n\n".encode()
            with contextlib.suppress(ConnectionError):
                for _ in range(400):
                    await response.write(event)
                    await asyncio.sleep(0.05)
            return response
        if self.flood:
            event = f"data: {json.dumps({'choices': [{'text': 'a'}]})}\n\n".encode()
            with contextlib.suppress(ConnectionError):
                for _ in range(0, self.flood, 500):
                    await response.write(event * 500)
                await response.write(b"data: [DONE]\n\n")
            return response
        for piece in ("a ", "+ b", "\nnext", " line"):  # server-sent events, as vLLM sends
            event = {"choices": [{"text": piece}]}
            await response.write(f"data: {json.dumps(event)}\n\n".encode())
            await asyncio.sleep(0.01)
        final = {"choices": [{"text": ""}], "usage": usage}
        await response.write(f"data: {json.dumps(final)}\n\ndata: [DONE]\n\n".encode())
        return response


async def test_http_backend_sends_the_family_prompt_and_stops() -> None:
    async with FakeOpenAI() as fake:
        backend = HttpBackend(fake.url + "/v1")
        await backend.start()
        try:
            assert backend.family is Family.QWEN_CODER  # from /v1/models
            rendered = render(backend.family, PromptParts("demo", "a.py", "x = ", ""))
            result = await backend.complete(Prompt(rendered, 16, True), threading.Event())
            assert (result.text, result.tokens) == ("a + b", 3)
            body = fake.bodies[0]
            assert body["prompt"] == rendered.text and body["max_tokens"] == 16
            assert body["temperature"] == 0.0 and body["model"] == "Qwen/Qwen2.5-Coder-1.5B"
            assert len(body["stop"]) == 4 and "<|endoftext|>" in body["stop"]
            assert body["cache_prompt"] is True and "prompt_cache_key" not in body
            assert (result.prompt_tokens, result.reused_tokens) == (40, 32)
            keyed = Prompt(rendered, 16, True, cache_key="typist-1")
            await backend.complete(keyed, threading.Event())
            assert fake.bodies[-1]["prompt_cache_key"] == "typist-1"
        finally:
            await backend.stop()


async def test_http_backend_streams_server_sent_events() -> None:
    async with FakeOpenAI() as fake:
        backend = HttpBackend(fake.url, model="qwen2.5-coder", cache_hints=False)
        await backend.start()
        try:
            rendered = render(backend.family, PromptParts("demo", "a.py", "x = ", ""))
            seen: list[str] = []
            line = await backend.complete_streaming(
                Prompt(rendered, 16, True), threading.Event(), seen.append
            )
            assert fake.bodies[-1]["stream"] is True and "cache_prompt" not in fake.bodies[-1]
            assert line.text == "a + b" and seen == ["a ", "a + b", "a + b\nnext"]
            block = await backend.complete_streaming(
                Prompt(rendered, 16, False), threading.Event(), seen.append
            )
            assert block.text == "a + b\nnext line" and block.reused_tokens == 32
        finally:
            await backend.stop()


async def test_http_backend_errors_and_cancellation() -> None:
    async with FakeOpenAI(delay=5.0) as fake:
        backend = HttpBackend(fake.url, model="deepseek-coder-1.3b")
        await backend.start()
        try:
            assert backend.family is Family.DEEPSEEK_CODER
            cancel = threading.Event()
            rendered = render(backend.family, PromptParts("demo", "a.py", "x", ""))
            task = asyncio.create_task(backend.complete(Prompt(rendered, 8, True), cancel))
            await asyncio.sleep(0.1)
            started = time.perf_counter()
            cancel.set()
            with pytest.raises(Cancelled):
                await task
            assert time.perf_counter() - started < 1.0
        finally:
            await backend.stop()
    async with FakeOpenAI() as fake:
        backend = HttpBackend(fake.url, model="Qwen2.5-Coder")
        await backend.start()
        try:
            rendered = render(Family.QWEN_CODER, PromptParts("d", "a", "", ""))
            bad = Prompt(type(rendered)(rendered.text + "boom", *_rest(rendered)), 8, True)
            with pytest.raises(HttpBackendError, match="500"):
                await backend.complete(bad, threading.Event())
        finally:
            await backend.stop()


def _rest(rendered: Any) -> tuple[Any, ...]:
    return (rendered.stop, rendered.prefix, rendered.suffix, rendered.context)


async def _longest_stall(work: Any) -> tuple[Any, float]:
    """``work``'s result and the event loop's longest stall while it ran (seconds)."""
    stall = 0.0

    async def tick() -> None:
        nonlocal stall
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.005)
            stall = max(stall, time.perf_counter() - before - 0.005)

    ticker = asyncio.create_task(tick())
    try:
        return await work, stall
    finally:
        ticker.cancel()


async def test_a_flood_of_tiny_pieces_neither_blocks_the_loop_nor_runs_past_the_limits() -> None:
    """A server that ignores max_tokens and sends one character per event, on one line:
    reading stops at max_tokens pieces, the work per piece stays small (no rescanning of
    the whole text), and the event loop keeps running."""
    async with FakeOpenAI(flood=30_000) as fake:
        backend = HttpBackend(fake.url, model="qwen2.5-coder", timeout=60)
        await backend.start()
        try:
            executor = Executor(backend, max_chars=100_000)
            pieces: list[str] = []
            spec = JobSpec("j1", PromptParts("demo", "a.py", "x = ", "\n"), 48, True, stream=True)
            out = await executor.run(spec, threading.Event(), pieces.append)
            assert out.text == "a" * 48 == "".join(pieces)
            # a limit the server's text never reaches: every piece is read, in linear time
            spec = JobSpec("j2", spec.parts, 1_000_000, True, stream=True)
            pieces.clear()
            started = time.perf_counter()
            out, stall = await _longest_stall(executor.run(spec, threading.Event(), pieces.append))
            assert out.text == "a" * 30_000 == "".join(pieces)
            assert time.perf_counter() - started < 10 and stall < 0.5
        finally:
            await backend.stop()


def test_text_stream_pieces_match_the_settled_text_at_every_step() -> None:
    """The incremental stream sends what ``settled`` says at each step."""
    rendered = render(Family.QWEN_CODER, PromptParts("demo", "a.py", "x = ", "  # end\n"))
    raw = "  \n total = a<|fim_pad|>  # end\nmore"
    for single_line in (True, False):
        for max_chars in (3, 100):
            pieces: list[str] = []
            stream = TextStream(rendered, single_line, max_chars, pieces.append)
            for end in range(1, len(raw) + 1):
                stream.update(raw[:end])
                assert "".join(pieces) == settled(raw[:end], rendered, single_line, max_chars)
            stream.send(finish(raw, rendered, single_line, max_chars))
            assert "".join(pieces) == finish(raw, rendered, single_line, max_chars)


def test_a_message_of_millions_of_values_is_refused_before_it_is_built() -> None:
    """A worker's message is bounded as a client's is: 7 MB of empty maps in nested arrays
    (each within 1024 entries, 4 deep) is refused from its bytes, nothing built."""
    inner = b"\xdc\x04\x00" + b"\x80" * 1024
    middle = b"\xdc\x04\x00" + inner * 1024
    flood = b"\x82\xa1t\xa4done\xa4junk\x97" + middle * 7
    started = time.perf_counter()
    with pytest.raises(ProtocolError, match="values in one message"):
        wire.decode(flood)
    assert time.perf_counter() - started < 1.0


def test_a_workers_figures_are_taken_within_reason() -> None:
    """A worker (or a model server behind it) that reports a time as NaN, infinite or
    negative, or negative token counts, does not make the completion figures unreadable
    (NaN is not JSON) or a counter go down: such figures are taken as 0, or an hour."""
    body = {
        "t": "done",
        "id": "j1",
        "text": "x",
        "queue_ms": float("nan"),
        "prompt_ms": float("inf"),
        "model_ms": -3.0,
        "tokens": -7,
        "model": "m",
        "prompt_tokens": -50,
        "reused_tokens": 10**6,
    }
    done = wire.decode(msgpack.packb(body))
    assert isinstance(done, wire.Done)
    figures = done.output
    assert (figures.queue_ms, figures.prompt_ms, figures.model_ms) == (0.0, 3_600_000.0, 0.0)
    assert (figures.tokens, figures.prompt_tokens) == (0, 0)
    json.dumps(dataclasses.asdict(figures), allow_nan=False)  # no NaN, no Infinity
    counted = JobOutput("x", 1.0, 2.0, 3.0, 4, "m", prompt_tokens=100, reused_tokens=10**6)
    assert counted.reused_tokens == 100
    assert JobOutput("x", 1.5, 2.0, 30.25, 7, "m", 1500, 1490).reused_tokens == 1490
    huge = JobOutput("a\ud800", 1.0, 1.0, 1.0, 10**20, "m\udfff", 10**20, 10**19)
    assert (huge.text, huge.model) == ("a\ufffd", "m\ufffd")
    assert (huge.tokens, huge.prompt_tokens, huge.reused_tokens) == (10**9, 10**9, 10**9)
    assert isinstance(wire.decode(wire.encode(wire.Done("j2", huge))), wire.Done)


async def test_a_stream_stops_once_the_completion_is_as_long_as_it_may_be() -> None:
    """A server that sends long pieces: once the text reaches the completion's length cap
    (``max_chars``), the stream is closed, rather than read to ``max_tokens`` pieces or the
    timeout (400 pieces here: 20 s)."""
    async with FakeOpenAI(answer="huge") as fake:
        backend = HttpBackend(fake.url, model="qwen2.5-coder", timeout=60)
        await backend.start()
        try:
            executor = Executor(backend, max_chars=4096)
            pieces: list[str] = []
            spec = JobSpec("j1", PromptParts("demo", "a.py", "x = ", "\n"), 500, False, stream=True)
            started = time.perf_counter()
            out = await executor.run(spec, threading.Event(), pieces.append)
            assert out.text == "b" * 4096 == "".join(pieces)
            assert time.perf_counter() - started < 5
        finally:
            await backend.stop()


async def test_a_stream_answered_with_no_events_is_an_error_as_when_not_streaming() -> None:
    async with FakeOpenAI(answer="page") as fake:
        backend = HttpBackend(fake.url, model="qwen2.5-coder")
        await backend.start()
        try:
            rendered = render(backend.family, PromptParts("demo", "a.py", "x = ", ""))
            prompt = Prompt(rendered, 16, False)
            with pytest.raises(HttpBackendError, match="unexpected answer"):
                await backend.complete(prompt, threading.Event())
            with pytest.raises(HttpBackendError, match="unexpected answer, not events"):
                await backend.complete_streaming(prompt, threading.Event(), lambda _t: None)
        finally:
            await backend.stop()


async def test_odd_answers_of_a_model_server_are_made_text_or_refused_clearly() -> None:
    """A ``null`` text is no text (it was the text "None"); a lone surrogate becomes U+FFFD
    (no message could carry it); an answer that is not UTF-8 or is over ``MAX_ANSWER``
    bytes is refused with a message that says so, read no further than the bound."""
    rendered = render(Family.PLAIN, PromptParts("demo", "a.py", "x = ", ""))
    expected: dict[str, str | type[Exception]] = {
        "null": "",
        "surrogate": "a\ufffdb",
        "latin1": 'not JSON: \'{"choices": [{"text": "caf\ufffd"}]}\'',
        "big": f"an answer over {MAX_ANSWER} bytes",
    }
    for answer, outcome in expected.items():
        async with FakeOpenAI(answer=answer) as fake:
            backend = HttpBackend(fake.url, model="m")
            await backend.start()
            try:
                prompt = Prompt(rendered, 16, False)
                if answer in ("null", "surrogate"):
                    result = await backend.complete(prompt, threading.Event())
                    assert result.text == outcome, answer
                else:
                    with pytest.raises(HttpBackendError) as err:
                        await backend.complete(prompt, threading.Event())
                    assert str(outcome) in str(err.value), (answer, str(err.value))
            finally:
                await backend.stop()


async def test_a_model_server_that_answers_only_later_is_asked_again_which_model_it_serves(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker started before its model server (which takes minutes to load a model) says
    so, and asks again before its next requests: once the server answers, the prompts are
    in its model's format and name the model (they stayed plain and unnamed for good)."""
    monkeypatch.setattr(http_backend, "DISCOVER_EVERY", 0.0)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    backend = HttpBackend(f"http://127.0.0.1:{port}")
    await backend.start()
    try:
        assert backend.family is Family.PLAIN and backend.model is None
        assert "does not say which model it serves" in caplog.text
        async with FakeOpenAI(port=port) as fake:
            parts = PromptParts("demo", "a.py", "x = ", "")
            rendered = render(backend.family, parts)
            await backend.complete(Prompt(rendered, 16, True), threading.Event())
            assert backend.family is Family.QWEN_CODER
            assert fake.bodies[-1]["model"] == "Qwen/Qwen2.5-Coder-1.5B"
    finally:
        await backend.stop()


async def test_a_character_sent_in_two_events_is_one_character() -> None:
    """A model server may stream a character past U+FFFF as two JSON escapes in two events:
    the halves are joined (each became U+FFFD), and a half left at the end is U+FFFD."""
    async with FakeOpenAI(answer="split") as fake:
        backend = HttpBackend(fake.url, model="m")
        await backend.start()
        try:
            rendered = render(Family.PLAIN, PromptParts("demo", "a.py", "x = ", ""))
            seen: list[str] = []
            result = await backend.complete_streaming(
                Prompt(rendered, 16, False), threading.Event(), seen.append
            )
            assert result.text == "ok \U0001f600 done\ufffd"
            assert all(text.encode("utf-8") for text in seen)  # each one UTF-8 can carry
        finally:
            await backend.stop()
