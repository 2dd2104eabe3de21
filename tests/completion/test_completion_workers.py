"""Remote workers: ``python -m collab worker`` processes that connect, take jobs and crash."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from collab import Client, ClientError, CollabServer
from collab.cli.commands import main as cli_main
from collab.live.origin import Origin
from collab.server.auth import Role, TokenAuthenticator
from protocol.errors import ErrorCode

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
APP = "demo/main:src/app.py"
SECRET = b"completion-secret-0123456789"


@asynccontextmanager
async def worker_process(
    server: CollabServer, *args: str, delay: float = 30.0
) -> AsyncIterator[asyncio.subprocess.Process]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(HERE)])
    env["FAKE_DELAY"] = str(delay)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "collab",
        "worker",
        "--url",
        server.url,
        "--log-level",
        "WARNING",
        *args,
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
        await proc.wait()


async def until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


def remote_workers(server: CollabServer) -> list[Any]:
    return [w for w in server.completion.pool.workers if w.name != "embedded"]


async def test_worker_process_completes_and_accepts(make_server: Any) -> None:
    async with (
        make_server(None) as server,
        worker_process(server, "--user", "gpu1", "--backend", "local", "--name", "w1"),
        Client(server.url, user="alice") as a,
        Client(server.url, user="bob") as b,
    ):
        await until(lambda: len(remote_workers(server)) == 1)
        assert remote_workers(server)[0].name.startswith("w1 (gpu1, local-ngram)")
        doc = await a.open(APP)
        other = await b.open(APP)
        seen: list[tuple[Origin, str | None]] = []
        server.rooms.get_key(APP).listeners.append(
            lambda _r, origin, author: seen.append((origin, author.user if author else None))
        )
        doc.insert(len(str(doc)), "\ndef farewell(name):\n    return 'hel")
        await a.flush()
        reply = await a.complete(doc, len(str(doc)))
        assert reply["text"] == "lo ' + name"  # the local model learned the file's own idiom
        assert reply["model"] == "local-ngram"
        assert reply["latency"]["model_ms"] > 0
        # bob edits after the answer, before it is accepted: above the cursor and right at it
        cursor = reply["index"]
        other.insert(cursor, "!")
        other.insert(0, "# top\n")
        expected = "# top\n" + str(doc)[:cursor] + "lo ' + name!"
        await doc.wait_for(lambda t: t.startswith("# top\n") and t.endswith("!"))
        await a.accept(reply)
        await other.wait_for(lambda t: t == expected)
        await doc.wait_for(lambda t: t == expected)
        assert (Origin.AI, "alice") in seen


async def test_killed_worker_fails_its_job_and_leaves_the_document(make_server: Any) -> None:
    async with (
        make_server(None) as server,
        worker_process(server, "--user", "gpu1", "--backend", "fake_backends:slow") as proc,
        Client(server.url, user="alice") as a,
    ):
        await until(lambda: len(remote_workers(server)) == 1)
        doc = await a.open(APP)
        before = str(doc)
        asking = asyncio.create_task(a.complete(doc, 3))
        await until(lambda: server.completion.pool.running == 1)
        proc.send_signal(signal.SIGKILL)
        with pytest.raises(ClientError) as err:
            await asking
        assert err.value.code == ErrorCode.UNAVAILABLE
        assert "worker" in err.value.message
        assert not remote_workers(server)
        assert str(server.rooms.get_key(APP).text) == before
        with pytest.raises(ClientError) as err:  # and with no worker left
            await a.complete(doc, 3)
        assert err.value.code == ErrorCode.UNAVAILABLE


async def test_cancel_reaches_the_worker_and_frees_its_slot(make_server: Any) -> None:
    async with (
        make_server(None) as server,
        worker_process(server, "--user", "gpu1", "--backend", "fake_backends:slow"),
        Client(server.url, user="alice") as a,
    ):
        await until(lambda: len(remote_workers(server)) == 1)
        doc = await a.open(APP)
        asking = asyncio.create_task(a.complete(doc, 3))
        await until(lambda: server.completion.pool.running == 1)
        await a.call("complete.cancel", doc=APP)
        with pytest.raises(ClientError) as err:
            await asking
        assert err.value.code == ErrorCode.CANCELLED
        # the worker stopped generating (its job would run 30 s) and answered: slot free
        await until(lambda: server.completion.pool.running == 0, timeout=5.0)
        assert remote_workers(server)


async def test_worker_tokens(make_server: Any, capsys: pytest.CaptureFixture[str]) -> None:
    os.environ["COLLAB_SECRET"] = SECRET.decode()
    try:
        assert cli_main(["token", "--role", "worker", "--user", "gpu1"]) == 0
    finally:
        del os.environ["COLLAB_SECRET"]
    worker_token = capsys.readouterr().out.strip()
    tokens = TokenAuthenticator(SECRET)
    identity = tokens.authenticate(token=worker_token, user=None, remote=None)
    assert identity.role is Role.WORKER and not identity.can_read("demo")
    writer_token = tokens.mint(user="mallory", repo="*", role=Role.WRITE)
    async with make_server(None, secret=SECRET) as server:
        async with worker_process(server, "--token", writer_token) as refused:
            assert await asyncio.wait_for(refused.wait(), 20) == 2
            assert refused.stderr is not None
            assert b"403" in await refused.stderr.read()
        async with worker_process(server, "--token", worker_token, "--backend", "local"):
            await until(lambda: len(remote_workers(server)) == 1)
        async with Client(server.url, token=worker_token) as w:  # workers open no document
            with pytest.raises(ClientError) as err:
                await w.open(APP)
            assert err.value.code == ErrorCode.FORBIDDEN


async def test_a_refused_worker_is_told_the_cause_and_the_fix(make_server: Any) -> None:
    tokens = TokenAuthenticator(SECRET)
    writer_token = tokens.mint(user="mallory", repo="*", role=Role.WRITE)
    expired = tokens.mint(user="gpu1", repo="*", role=Role.WORKER, ttl=-1)
    mint = "collab token --role worker --user NAME"
    async with make_server(None, secret=SECRET) as server:
        for args, words in (
            ((), ("refused this worker (401)", "--user NAME", "--token", mint)),
            (("--token", expired), ("refused this worker (401)", "expired", mint)),
            (("--token", writer_token), ("refused this worker (403)", "not a worker token", mint)),
            (("--url", f"{server.url}/engine"), ("/engine/worker: HTTP 404", "base URL")),
            (("--url", "nonsense"), ("--url 'nonsense' is not an engine's address", "ws://")),
            (("--url", "ws://127.0.0.1:port"), ("--url 'ws://127.0.0.1:port'", "ws://HOST:PORT")),
        ):
            async with worker_process(server, *args) as refused:
                assert await asyncio.wait_for(refused.wait(), 20) == 2, args
                assert refused.stderr is not None
                err = (await refused.stderr.read()).decode()
            assert "Traceback" not in err and err.count("\n") == 1, err
            for word in words:
                assert word in err, (word, err)
        async with worker_process(server, "--url", f"{server.url}/ws", "--token", expired) as ws:
            assert await asyncio.wait_for(ws.wait(), 20) == 2  # /ws: the engine's, as with Client
            assert ws.stderr is not None
            assert f"{server.url}/worker refused" in (await ws.stderr.read()).decode()


@pytest.mark.parametrize("capacity", ["0", "-3", "5000", "many"])
def test_a_capacity_the_engine_would_refuse_is_refused_at_once(
    capacity: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli_main(["worker", "--url", "ws://127.0.0.1:1", "--capacity", capacity])
    assert exited.value.code == 2
    assert "--capacity" in capsys.readouterr().err


def broken_start() -> Any:
    """A backend whose start fails, as one without its model's files does."""
    from fake_backends import FakeBackend

    class Broken(FakeBackend):
        async def start(self) -> None:
            raise OSError("the model's tokenizer files are missing")

    return Broken()


async def test_a_backend_that_cannot_start_is_one_line_with_the_cause(
    make_server: Any, tmp_path: Path
) -> None:
    """A worker whose backend cannot be made or started (a model directory that does not
    exist, a factory that fails, a start that fails) says why in one line and exits 2."""
    async with make_server(None) as server:
        for args, words in (
            (
                ("--backend", "transformers", "--model", str(tmp_path / "none")),
                ("model directory", "does not exist"),
            ),
            (("--backend", "os:path"), ("'os:path'", "path() failed", "not callable")),
            (("--backend", "test_completion_workers:broken_start"), ("cannot start", "missing")),
            (("--backend", "http"), ("--endpoint", "--completion-endpoint")),
        ):
            async with worker_process(server, "--user", "gpu1", *args) as refused:
                assert await asyncio.wait_for(refused.wait(), 20) == 2, args
                assert refused.stderr is not None
                err = (await refused.stderr.read()).decode()
            assert "Traceback" not in err and err.count("\n") == 1, err
            for word in words:
                assert word in err, (word, err)


async def test_a_workers_connection_ends_when_its_token_expires(make_server: Any) -> None:
    """A worker gets document text in its jobs: it gets none once its token has expired.
    The engine closes it (4001) and the worker stops, saying its token expired."""
    short = TokenAuthenticator(SECRET).mint(user="gpu1", repo="*", role=Role.WORKER, ttl=3)
    async with make_server(None, secret=SECRET) as server:
        async with worker_process(server, "--token", short, "--backend", "local") as proc:
            await until(lambda: len(remote_workers(server)) == 1)
            assert await asyncio.wait_for(proc.wait(), 20) == 2
            assert proc.stderr is not None
            assert "expired" in (await proc.stderr.read()).decode()
        assert not remote_workers(server)
