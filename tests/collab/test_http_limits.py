"""Slow and oversized clients on a live server: trickled headers and bodies are cut off in time,
bad JSON is a 400, and normal clients (keep-alive HTTP, long-lived WebSockets) are left alone."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from servers import make_config

from collab import CollabServer
from protocol.errors import ErrorCode
from protocol.yjs import SyncStep1, SyncStep2, decode_message, encode_message

TIMEOUT = 0.5  # header and body timeouts of the server under test
LIMIT = 64 * 1024  # its max_message
BOUND = TIMEOUT + 2.5  # a slow client must be gone within this long (loaded CI machines)


@pytest.fixture
async def strict(repos: Path, tmp_path: Path) -> AsyncIterator[CollabServer]:
    config = make_config(
        repos,
        tmp_path / "data",
        store="memory",
        header_timeout=TIMEOUT,
        body_timeout=TIMEOUT,
        max_message=LIMIT,
    )
    async with CollabServer(config) as srv:
        yield srv


async def _until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = b""
    try:
        while chunk := await reader.read(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received


async def _trickle(writer: asyncio.StreamWriter, every: float = 0.05) -> None:
    """One byte at a time, for as long as the socket takes them."""
    try:
        while True:
            writer.write(b"a")
            await writer.drain()
            await asyncio.sleep(every)
    except ConnectionError:
        pass


async def _slow_client(port: int, head: bytes, *, trickle: bool = True) -> tuple[float, bytes]:
    """Send ``head``, then trickle (or go silent); how long until the server closed, and what it
    answered."""
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = loop.time()
    writer.write(head)
    dripping = asyncio.create_task(_trickle(writer) if trickle else asyncio.sleep(BOUND))
    try:
        async with asyncio.timeout(BOUND):
            answer = await _until_closed(reader)
        return loop.time() - started, answer
    finally:
        dripping.cancel()
        await asyncio.gather(dripping, return_exceptions=True)
        writer.close()


HEADERS_API = b"POST /api/branch.list?user=alice HTTP/1.1\r\nHost: x\r\nX-Slow: "
HEADERS_GIT = b"GET /git/demo/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: x\r\nX-Slow: "


@pytest.mark.parametrize("head", [HEADERS_API, HEADERS_GIT], ids=["api", "git"])
async def test_trickled_headers_are_cut_off(strict: CollabServer, head: bytes) -> None:
    results = await asyncio.gather(*(_slow_client(strict.port, head) for _ in range(20)))
    for elapsed, answer in results:
        assert TIMEOUT * 0.8 <= elapsed < BOUND
        assert answer == b""  # the request never started: nothing to answer


async def test_silent_connection_is_cut_off(strict: CollabServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", strict.port)
    try:
        async with asyncio.timeout(BOUND):
            assert await _until_closed(reader) == b""
    finally:
        writer.close()


def _body_head(path: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


async def test_trickled_api_body_is_a_408(strict: CollabServer) -> None:
    results = await asyncio.gather(
        *(
            _slow_client(strict.port, _body_head("/api/branch.list?user=a", 10_000))
            for _ in range(20)
        )
    )
    for elapsed, answer in results:
        assert elapsed < BOUND
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 ")
        assert json.loads(body)["error"]["name"] == "TIMEOUT"


@pytest.mark.parametrize("trickle", [True, False], ids=["trickled", "silent"])
async def test_slow_push_body_is_cut_off(strict: CollabServer, trickle: bool) -> None:
    head = _body_head("/git/demo/git-receive-pack?user=alice", 1_000_000).replace(
        b"application/json", b"application/x-git-receive-pack-request"
    )
    results = await asyncio.gather(
        *(_slow_client(strict.port, head, trickle=trickle) for _ in range(5))
    )
    for elapsed, answer in results:
        assert elapsed < BOUND
        assert answer == b"" or answer.startswith((b"HTTP/1.1 408 ", b"HTTP/1.1 400 "))


async def test_api_body_over_the_limit_is_a_413(strict: CollabServer) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"http://127.0.0.1:{strict.port}/api/branch.list",
            params={"user": "alice"},
            data=b" " * (LIMIT + 1),
            headers={"Content-Type": "application/json"},
        ) as response,
    ):
        assert response.status == 413
        assert (await response.json())["error"]["code"] == ErrorCode.TOO_LARGE


@pytest.mark.parametrize(
    "body",
    [b"[" * 10_000 + b"]" * 10_000, b'{"a":' * 10_000 + b"1" + b"}" * 10_000, b"\xff{", b"{"],
    ids=["deep-array", "deep-object", "not-utf8", "truncated"],
)
async def test_bad_json_is_a_400(strict: CollabServer, body: bytes) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"http://127.0.0.1:{strict.port}/api/branch.list",
            params={"user": "alice"},
            data=body,
            headers={"Content-Type": "application/json"},
        ) as response,
    ):
        assert response.status == 400
        assert (await response.json())["error"]["name"] == "MALFORMED"


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    json.loads(await reader.readexactly(length))


async def test_keep_alive_client_is_unaffected(strict: CollabServer) -> None:
    """Requests each within the deadline, on one connection held for several deadlines;
    once the client goes quiet, the connection is closed."""
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection("127.0.0.1", strict.port)
    try:
        started = loop.time()
        for _ in range(5):
            await _exchange(reader, writer)
            await asyncio.sleep(TIMEOUT / 2)
        assert loop.time() - started > 2 * TIMEOUT
        async with asyncio.timeout(BOUND):
            assert await _until_closed(reader) == b""
    finally:
        writer.close()


async def test_slow_handler_is_not_cut_off(repos: Path, tmp_path: Path) -> None:
    """The header deadline stops once a request is being handled."""

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(2 * TIMEOUT)
        return web.Response(text="done")

    config = make_config(repos, tmp_path / "data", store="memory", header_timeout=TIMEOUT)
    server = CollabServer(config)
    server.add_route("GET", "/slow", slow)
    async with server, aiohttp.ClientSession() as session:
        for _ in range(2):  # the second on the same, kept-alive connection
            async with session.get(f"http://127.0.0.1:{server.port}/slow") as response:
                assert await response.text() == "done"


async def test_websocket_outlives_the_header_deadline(strict: CollabServer) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{strict.url}/yjs/demo/main:README.md", params={"user": "a"}) as ws,
    ):
        await asyncio.sleep(3 * TIMEOUT)
        await ws.send_bytes(encode_message(SyncStep1(b"\x00")))
        async with asyncio.timeout(5):
            while True:
                msg = await ws.receive()
                assert msg.type is aiohttp.WSMsgType.BINARY
                if isinstance(decode_message(msg.data), SyncStep2):
                    break
        assert not ws.closed


async def test_upgraded_connection_bypasses_the_guard(repos: Path, tmp_path: Path) -> None:
    """After a WebSocket upgrade, the transport feeds aiohttp's handler directly: no per-frame
    cost for the header deadline."""
    seen: list[tuple[bool, bool]] = []

    async def probe(request: web.Request) -> web.WebSocketResponse:
        transport = request.transport
        assert transport is not None
        before = isinstance(transport.get_protocol(), web.RequestHandler)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        seen.append((before, isinstance(transport.get_protocol(), web.RequestHandler)))
        await ws.close()
        return ws

    config = make_config(repos, tmp_path / "data", store="memory", header_timeout=TIMEOUT)
    server = CollabServer(config)
    server.add_route("GET", "/probe", probe)
    async with (
        server,
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{server.url}/probe") as ws,
    ):
        await ws.receive()
    assert seen == [(False, True)]


async def test_stop_closes_slow_clients_promptly(repos: Path, tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    server = CollabServer(make_config(repos, tmp_path / "data", store="memory"))  # 10 s timeouts
    await server.start()
    heads = [HEADERS_API, HEADERS_GIT, _body_head("/api/branch.list?user=a", 10_000)]
    clients = [asyncio.create_task(_slow_client(server.port, head)) for head in heads * 3]
    await asyncio.sleep(0.3)
    started = loop.time()
    await server.stop()
    assert loop.time() - started < 2.5
    for elapsed, _answer in await asyncio.gather(*clients):
        assert elapsed < BOUND
