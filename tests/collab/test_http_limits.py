"""Slow and oversized clients on a live server: trickled headers and bodies are cut off in time,
bad JSON is a 400, an oversized WebSocket frame is closed with 4009, and normal clients (keep-alive
HTTP, long-lived WebSockets) are left alone."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import msgpack
import pytest
from aiohttp import web
from jsfleet import DEFAULT_NODE_DIR, js_available
from serverproc import ServerProcess
from servers import make_config

from collab import Client, CollabServer, ServerConfig
from protocol import messages as m
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


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_another_method_than_post_is_a_json_405(strict: CollabServer, method: str) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method, f"http://127.0.0.1:{strict.port}/api/branch.list", params={"user": "alice"}
        ) as response,
    ):
        assert response.status == 405
        assert response.headers["Allow"] == "POST"
        error = (await response.json())["error"]
        assert error["code"] == ErrorCode.MALFORMED and error["name"] == "MALFORMED"
        assert error["message"].startswith(f"{method} is not allowed: operations are POST")


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


@pytest.fixture
async def default_limits(repos: Path, tmp_path: Path) -> AsyncIterator[CollabServer]:
    async with CollabServer(make_config(repos, tmp_path / "data", store="memory")) as srv:
        yield srv


async def _close_of(ws: aiohttp.ClientWebSocketResponse) -> aiohttp.WSMessage:
    async with asyncio.timeout(5):
        while True:
            msg = await ws.receive()
            if msg.type is not aiohttp.WSMsgType.BINARY:
                return msg


async def _assert_refused_with_4009(ws: aiohttp.ClientWebSocketResponse, limit: int) -> None:
    # the whole frame goes out (the server reads and discards it) instead of a reset mid-send
    await ws.send_bytes(b"\x00" * (limit + 1))
    msg = await _close_of(ws)
    assert msg.type is aiohttp.WSMsgType.CLOSE
    assert msg.data == ErrorCode.TOO_LARGE
    assert msg.extra == f"message over the limit of {limit} bytes"


async def test_oversized_frame_closes_yjs_with_4009(default_limits: CollabServer) -> None:
    url = f"{default_limits.url}/yjs/demo/main:README.md"
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(url, params={"user": "a"}) as ws,
    ):
        await _assert_refused_with_4009(ws, default_limits.config.max_message)


async def test_oversized_frame_closes_ws_with_4009(default_limits: CollabServer) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{default_limits.url}/ws") as ws,
    ):
        await ws.send_bytes(m.encode(m.Hello(m.PROTOCOL_VERSION, user="a")))
        assert isinstance(m.decode((await ws.receive()).data), m.Welcome)
        await _assert_refused_with_4009(ws, default_limits.config.max_message)


# 7,340,032 empty msgpack maps in arrays of 1024, 3 deep: a 7 MiB value within the size,
# length and depth limits, which decoded whole held the event loop for seconds (and took half
# a gigabyte)
EMPTY_MAPS = b"\x97" + (b"\xdc\x04\x00" + (b"\xdc\x04\x00" + b"\x80" * 1024) * 1024) * 7
HELLO_BOMB = b"\x84" + b"".join(map(msgpack.packb, ["t", 1, "version", 1, "user", "x"]))
CALL_BOMB = b"\x84" + b"".join(map(msgpack.packb, ["t", 11, "id", 1, "op", "x", "args"]))


async def _refused_while_others_are_served(
    server: CollabServer, frame: bytes, *, hello: bool
) -> tuple[aiohttp.WSMessage, float]:
    """Send ``frame`` on one ``/ws`` connection (after a hello if ``hello``) while another
    client edits and flushes: the close it got, and the other's slowest flush meanwhile."""

    async def attack() -> aiohttp.WSMessage:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"{server.url}/ws") as ws,
        ):
            if hello:
                await ws.send_bytes(m.encode(m.Hello(m.PROTOCOL_VERSION, user="mallory")))
                assert isinstance(m.decode((await ws.receive()).data), m.Welcome)
            await ws.send_bytes(frame)
            return await _close_of(ws)

    async with Client(server.url, user="victim") as victim:
        doc = await victim.open("demo/main:README.md")
        attacker = asyncio.create_task(attack())
        slowest = 0.0
        while not attacker.done():
            started = time.perf_counter()
            doc.insert(0, "k")
            await victim.flush(timeout=30)
            slowest = max(slowest, time.perf_counter() - started)
        return await attacker, slowest


async def test_a_hello_made_of_millions_of_maps_is_refused_at_once(
    default_limits: CollabServer,
) -> None:
    """Unauthenticated, one frame within the size limit held every other client up for
    seconds: a first message over 64 KiB is refused before it is decoded."""
    frame = HELLO_BOMB + msgpack.packb("junk") + EMPTY_MAPS
    assert len(frame) <= default_limits.config.max_message
    close, slowest = await _refused_while_others_are_served(default_limits, frame, hello=False)
    assert (close.data, close.extra) == (
        ErrorCode.TOO_LARGE,
        f"hello of {len(frame)} bytes over the limit of {m.DEFAULT_LIMITS.max_hello} bytes",
    )
    assert slowest < 2.0


async def test_a_call_made_of_millions_of_maps_is_refused_at_once(
    default_limits: CollabServer,
) -> None:
    frame = CALL_BOMB + b"\x81" + msgpack.packb("junk") + EMPTY_MAPS
    close, slowest = await _refused_while_others_are_served(default_limits, frame, hello=True)
    assert (close.data, close.extra) == (
        ErrorCode.MALFORMED,
        f"more than {m.DEFAULT_LIMITS.max_values} values in one message",
    )
    assert slowest < 2.0


NODE_CLIENT = """
import WebSocket from "ws";
const ws = new WebSocket(process.argv[1]);
ws.on("open", () => ws.send(Buffer.alloc(Number(process.argv[2]) + 1)));
ws.on("error", () => {});
ws.on("close", (code, reason) => console.log(JSON.stringify([code, reason.toString()])));
"""


@pytest.mark.js
async def test_node_client_reads_4009(default_limits: CollabServer) -> None:
    """Node's ``ws`` (what y-websocket runs on) saw only 1006 when the server closed while it
    was still sending the message."""
    if not js_available():
        pytest.fail("Node.js or the npm packages under tests/js are missing", pytrace=False)
    limit = default_limits.config.max_message
    url = f"{default_limits.url}/yjs/demo/main:README.md?user=a"
    node = await asyncio.create_subprocess_exec(
        "node",
        "--input-type=module",
        "-e",
        NODE_CLIENT,
        url,
        str(limit),
        cwd=DEFAULT_NODE_DIR,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(20):
            out, _ = await node.communicate()
    finally:
        if node.returncode is None:
            node.kill()
            await node.wait()
    assert json.loads(out) == [ErrorCode.TOO_LARGE, f"message over the limit of {limit} bytes"]


async def _oversized_sender(port: int, limit: int) -> tuple[float, bytes]:
    """A raw WebSocket client that announces a frame over ``limit`` and then trickles its
    payload; how long until the server stopped taking it, and what the server sent."""
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET /yjs/demo/main:README.md?user=a HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    assert b" 101 " in await reader.readuntil(b"\r\n\r\n")
    started = loop.time()
    # a masked binary frame's header with a 64-bit length, then the payload a byte at a time
    writer.write(b"\x82\xff" + (limit + 1).to_bytes(8, "big") + b"\x00\x00\x00\x00")
    dripping = asyncio.create_task(_trickle(writer))
    try:
        async with asyncio.timeout(BOUND):
            received = await _until_closed(reader)  # the server's FIN comes first
            await dripping  # then, once it stops discarding, a reset
        return loop.time() - started, received
    finally:
        dripping.cancel()
        await asyncio.gather(dripping, return_exceptions=True)
        writer.close()


CLOSE_4009 = (
    b"\x88"
    + bytes((2 + len(f"message over the limit of {LIMIT} bytes"),))
    + (ErrorCode.TOO_LARGE.to_bytes(2, "big") + f"message over the limit of {LIMIT} bytes".encode())
)


async def test_refused_frame_is_discarded_for_at_most_the_body_timeout(
    strict: CollabServer,
) -> None:
    """A peer that keeps sending after the close frame is cut off once the linger is over."""
    elapsed, received = await _oversized_sender(strict.port, LIMIT)
    assert received.endswith(CLOSE_4009)
    assert TIMEOUT * 0.8 <= elapsed < BOUND


async def test_collab_serve_guards_and_refuses_on_its_own_loop(repos: Path, tmp_path: Path) -> None:
    """``collab serve`` runs on uvloop, whose transports are not asyncio's classes: requests,
    upgrades and the refusal of an oversized message work there too."""
    server = ServerProcess(repos, tmp_path / "data")
    await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(3):  # kept alive
                async with session.get(f"http://127.0.0.1:{server.port}/healthz") as response:
                    assert response.status == 200
            url = f"{server.url}/yjs/demo/main:README.md"
            async with session.ws_connect(url, params={"user": "a"}) as ws:
                limit = ServerConfig(repos, tmp_path / "data").max_message  # the default
                await _assert_refused_with_4009(ws, limit)
    finally:
        await server.stop()


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
    refused = asyncio.create_task(_oversized_sender(server.port, server.config.max_message))
    await asyncio.sleep(0.3)
    started = loop.time()
    await server.stop()
    assert loop.time() - started < 2.5
    for elapsed, _answer in await asyncio.gather(*clients, refused):
        assert elapsed < BOUND


async def test_an_api_body_is_capped_well_below_a_frame(server: CollabServer) -> None:
    """Operations take a few names and numbers: a body of a megabyte of empty JSON objects
    (most costly to parse for its size) is refused before it is parsed."""
    body = b"[" + b"{}," * 350_000 + b"{}]"
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{server.url.replace('ws://', 'http://')}/api/branch.list",
            params={"user": "alice"},
            data=io.BytesIO(body),
            headers={"Content-Type": "application/json"},
        ) as response,
    ):
        assert response.status == 413
        assert (await response.json())["error"]["code"] == ErrorCode.TOO_LARGE
    assert len(body) > server.config.max_api_body


async def test_a_malformed_request_is_logged_as_one_line(
    server: CollabServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A request aiohttp cannot read is the peer's fault: answered 400 and logged as one
    ``INFO`` line, not an ``ERROR`` with a traceback a client could repeat at will."""
    caplog.set_level(logging.INFO, logger="aiohttp.server")
    for request in (
        b"POST /api/branch.list?user=e HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 9000 + b"\r\n\r\n",
        b"POST /api/branch.list?user=e HTTP/1.1\r\nHost: x\r\nContent-Encoding: br\r\n"
        b"Content-Length: 2\r\n\r\n{}",
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(request)
        await writer.drain()
        assert (await asyncio.wait_for(reader.read(100), 5)).startswith(b"HTTP/1.0 400")
        writer.close()
    await asyncio.sleep(0.2)
    said = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert len(said) == 3 and {r.levelno for r in said} == {logging.INFO}
    assert all(r.exc_info is None and "Error handling request" in r.getMessage() for r in said)
