"""``StreamTail`` against a real ``redis-server``: entries in order as the stream grows, a
user, password and database from the URL, and every way its connection ends."""

from __future__ import annotations

import asyncio
import pathlib
import ssl

import pytest
from gitcli import until
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redisproc import RedisProcess

from collab.bus.resp import tls
from collab.bus.stream_tail import Entry, StreamTail


class Reader:
    """A tail's owner: takes every batch and moves the cursor past it."""

    def __init__(self) -> None:
        self.cursor = 0
        self.batches: list[list[Entry]] = []

    def take(self, entries: list[Entry]) -> None:
        self.batches.append(entries)
        self.cursor = int(entries[-1][0].split(b"-")[1])

    @property
    def values(self) -> list[bytes]:
        return [fields[b"v"] for batch in self.batches for _id, fields in batch]

    async def open(self, url: str, **options: float) -> StreamTail:
        return await StreamTail.open(
            url,
            "s",
            lambda: self.cursor,
            self.take,
            count=int(options.get("count", 100)),
            block_ms=int(options.get("block_ms", 500)),
            timeout=options.get("timeout", 1.0),
            name="test-tail",
        )


async def test_entries_come_in_order_as_the_stream_grows(redis_process: RedisProcess) -> None:
    client = Redis.from_url(redis_process.url)
    reader = Reader()
    for i in range(1, 4):  # written before the tail: read at once, in one batch
        await client.xadd("s", {"v": b"%d" % i}, id=f"0-{i}")
    tail = await reader.open(redis_process.url, count=2)
    try:
        await until(lambda: len(reader.values) == 3)
        assert [len(batch) for batch in reader.batches[:2]] == [2, 1]  # at most ``count``
        for i in range(4, 40):
            await client.xadd("s", {"v": b"%d" % i}, id=f"0-{i}")
            if i % 7 == 0:
                await asyncio.sleep(0.6)  # a block that ends with nothing new: read on
        await until(lambda: len(reader.values) == 39)
        assert reader.values == [b"%d" % i for i in range(1, 40)]
        names = [c["name"] for c in await client.client_list()]
        assert "test-tail" in names
    finally:
        tail.close()
        await client.aclose()
    assert await tail.closed is None  # closed by its owner


async def test_the_user_password_and_database_come_from_the_url(
    redis_process: RedisProcess,
) -> None:
    client = Redis.from_url(redis_process.url)
    await client.acl_setuser(
        "tailer", enabled=True, passwords=["+s3cret"], commands=["+@all"], keys=["*"]
    )
    db3 = Redis.from_url(f"redis://127.0.0.1:{redis_process.port}/3")
    await db3.xadd("s", {"v": b"in db 3"}, id="0-1")
    await client.xadd("s", {"v": b"in db 0"}, id="0-1")
    reader = Reader()
    tail = await reader.open(f"redis://tailer:s3cret@127.0.0.1:{redis_process.port}/3")
    try:
        await until(lambda: len(reader.values) == 1)
        assert reader.values == [b"in db 3"]
    finally:
        tail.close()
        await client.aclose()
        await db3.aclose()
    with pytest.raises(ResponseError):  # a wrong password: refused, said so
        await Reader().open(f"redis://tailer:wrong@127.0.0.1:{redis_process.port}/3")


async def test_a_redis_that_goes_away_ends_the_tail_with_an_error(
    redis_process: RedisProcess,
) -> None:
    reader = Reader()
    tail = await reader.open(redis_process.url)
    redis_process.kill()
    with pytest.raises(RedisConnectionError):
        await asyncio.wait_for(tail.closed, 5)
    with pytest.raises(OSError):
        await Reader().open(redis_process.url)  # nothing listens


async def test_a_paused_redis_ends_the_tail_once_a_read_is_overdue(
    redis_process: RedisProcess,
) -> None:
    reader = Reader()
    tail = await reader.open(redis_process.url, block_ms=300, timeout=0.5)
    started = asyncio.get_running_loop().time()
    redis_process.pause()
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(tail.closed, 10)
        waited = asyncio.get_running_loop().time() - started
        assert 0.5 < waited < 4  # the block, the grace, and at most a check's period more
        with pytest.raises(TimeoutError):  # connected, but the handshake is not answered
            await Reader().open(redis_process.url, timeout=0.5)
    finally:
        redis_process.resume()


async def test_a_failing_owner_does_not_end_the_tail(
    redis_process: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    client = Redis.from_url(redis_process.url)
    reader = Reader()
    taken: list[list[Entry]] = []

    def take(entries: list[Entry]) -> None:
        taken.append(entries)
        reader.take(entries)
        if len(taken) == 1:
            raise RuntimeError("the owner's bug")

    tail = await StreamTail.open(
        redis_process.url, "s", lambda: reader.cursor, take, count=1, block_ms=500, timeout=1.0
    )
    try:
        for i in range(1, 4):
            await client.xadd("s", {"v": b"%d" % i}, id=f"0-{i}")
        await until(lambda: len(reader.values) == 3)
        assert not tail.closed.done()
        assert "handing on 1 entries failed" in caplog.text
    finally:
        tail.close()
        await client.aclose()


def test_a_rediss_url_gives_the_tls_options_redis_py_reads(tmp_path: pathlib.Path) -> None:
    strict = tls({})
    assert strict.verify_mode == ssl.CERT_REQUIRED and strict.check_hostname
    loose = tls({"ssl_cert_reqs": "none"})
    assert loose.verify_mode == ssl.CERT_NONE and not loose.check_hostname
    assert not tls({"ssl_check_hostname": False}).check_hostname
    with pytest.raises(FileNotFoundError):  # the CA file named is read
        tls({"ssl_ca_certs": str(tmp_path / "missing-ca.pem")})
    # what redis-py's own TLS connection does with the same options
    optional = tls({"ssl_cert_reqs": "optional"})
    assert optional.verify_mode == ssl.CERT_OPTIONAL and optional.check_hostname
    assert tls({"ssl_min_version": ssl.TLSVersion.TLSv1_3}).minimum_version is (
        ssl.TLSVersion.TLSv1_3
    )
    with pytest.raises(ssl.SSLError):  # the ciphers named are used
        tls({"ssl_ciphers": "NO-SUCH-CIPHER"})


@pytest.mark.parametrize("scheme", ["rediss", "REDISS", "Rediss"])
async def test_a_rediss_url_in_any_case_speaks_tls_before_it_says_the_password(
    scheme: str,
) -> None:
    first: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def listen(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read(64)
        if not first.done():
            first.set_result(data)
        writer.close()

    server = await asyncio.start_server(listen, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises((OSError, ssl.SSLError, RedisConnectionError, TimeoutError)):
            await StreamTail.open(
                f"{scheme}://:s3cret@127.0.0.1:{port}/0?ssl_cert_reqs=none",
                "s",
                lambda: 0,
                lambda entries: None,
                count=10,
                block_ms=100,
                timeout=2.0,
            )
        data = await asyncio.wait_for(first, 2.0)
        assert data[:1] == b"\x16"  # a TLS handshake record
        assert b"s3cret" not in data
    finally:
        server.close()
        await server.wait_closed()
