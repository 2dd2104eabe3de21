"""``collab worker``: a completion worker process that connects to an engine and takes jobs.

It may run on another machine (one with a GPU): ``collab worker --url ws://engine:8765
--token $(collab token --role worker --user gpu1) --backend transformers --model DIR``.
It reconnects with backoff when the engine goes away or drops it (a job it did not stop in
time when the engine cancelled it), and exits on a refused token.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import signal
import socket
import sys
import threading
import urllib.parse
from typing import Any

import aiohttp

from protocol.errors import ErrorCode

from ..log_format import LOG_FORMATS, LOG_LEVELS, configure_logging
from . import wire
from .backend import Cancelled, CompletionBackend, valid_text
from .backends import BACKENDS, create_backend
from .executor import Executor, JobSpec
from .prompts import Family

__all__ = ["RemoteWorker", "WorkerRefused", "add_worker_parser", "run_worker_command"]

log = logging.getLogger("collab.completion.worker")

TOKEN_ENV = "COLLAB_WORKER_TOKEN"
_REFUSALS = frozenset({ErrorCode.MALFORMED})
"""Close codes of an engine that refused the worker's hello itself: trying again is futile."""


class WorkerRefused(Exception):
    """The engine refused the worker's credentials, or its backend cannot start; retrying
    would not help."""


class RemoteWorker:
    """Connects to an engine's ``/worker`` endpoint and runs the jobs it sends."""

    def __init__(
        self,
        url: str,
        backend: CompletionBackend,
        *,
        token: str | None = None,
        user: str | None = None,
        name: str | None = None,
        max_prompt_tokens: int = 2048,
        max_chars: int = 4096,
        min_backoff: float = 0.1,
        max_backoff: float = 10.0,
    ) -> None:
        # the engine's base URL; its /worker (or /ws) endpoint is taken for it too
        base = url.rstrip("/").removesuffix("/worker").removesuffix("/ws")
        self.url = base + "/worker"
        self.backend = backend
        self.token = token
        self.user = user
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.executor = Executor(backend, max_prompt_tokens=max_prompt_tokens, max_chars=max_chars)
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.connected = asyncio.Event()
        self._flags: dict[str, threading.Event] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._outgoing: asyncio.Queue[bytes] = asyncio.Queue()  # to the current connection

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Start the backend and serve until ``stop`` is set; raise ``WorkerRefused``."""
        stop = stop or asyncio.Event()
        try:
            await self.backend.start()
        except Exception as exc:  # a missing model, a missing library: no retry helps
            log.debug("the backend failed to start", exc_info=True)
            name = self.backend.name
            raise WorkerRefused(f"the completion backend {name!r} cannot start: {exc}") from exc
        try:
            async with aiohttp.ClientSession() as session:
                runner = asyncio.create_task(self._serve(session))
                stopper = asyncio.create_task(stop.wait())
                try:
                    await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stopper.cancel()
                    runner.cancel()
                    outcome, _ = await asyncio.gather(runner, stopper, return_exceptions=True)
                if isinstance(outcome, WorkerRefused):
                    raise outcome
        finally:
            await self.backend.stop()

    async def _serve(self, session: aiohttp.ClientSession) -> None:
        backoff = self.min_backoff
        while True:
            try:
                await self._connect_once(session)
                backoff = self.min_backoff
            except aiohttp.WSServerHandshakeError as exc:
                if exc.status in (401, 403, 404):
                    raise WorkerRefused(self._refusal(exc.status)) from exc
                log.warning("engine at %s: %s", self.url, exc)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                log.warning("engine at %s unreachable: %s", self.url, exc)
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, self.max_backoff)

    def _refusal(self, status: int) -> str:
        """Why the engine answered ``status`` (401, 403 or 404), and what to do about it."""
        mint = "collab token --role worker --user NAME, with the engine's secret"
        if status == 404:
            return (
                f"{self.url}: HTTP 404, no engine answers there; give the engine's base URL, "
                "ws://HOST:PORT"
            )
        if status == 403:
            return f"{self.url} refused this worker (403): the token is not a worker token; {mint}"
        if self.token:
            return (
                f"{self.url} refused this worker (401): the token is expired or signed with "
                f"another secret; mint one with {mint}"
            )
        return (
            f"{self.url} refused this worker (401): it has no credentials; an engine in dev "
            f"mode takes --user NAME, one with a secret a worker token (--token or "
            f"${TOKEN_ENV}): {mint}"
        )

    async def _connect_once(self, session: aiohttp.ClientSession) -> None:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        params = {"user": self.user} if self.user else {}
        async with session.ws_connect(
            self.url, headers=headers, params=params, heartbeat=30.0, max_msg_size=wire.MAX_MESSAGE
        ) as ws:
            backend = self.backend
            hello = wire.WorkerHello(self.name, backend.name, str(backend.family), backend.capacity)
            await ws.send_bytes(wire.encode(hello))
            first = await ws.receive(timeout=30.0)
            if first.type is not aiohttp.WSMsgType.BINARY or not isinstance(
                wire.decode(first.data), wire.WorkerWelcome
            ):
                if ws.close_code in _REFUSALS:  # the same hello would be refused again
                    raise WorkerRefused(
                        f"{self.url} refused this worker's hello: {ws.close_code} {first.extra}"
                    )
                log.warning("engine closed the connection: %s %s", ws.close_code, first.extra)
                return
            log.info("connected to %s as %s", self.url, self.name)
            self.connected.set()
            self._outgoing = asyncio.Queue()
            writer = asyncio.create_task(self._write(ws, self._outgoing))
            try:
                async for msg in ws:
                    if msg.type is aiohttp.WSMsgType.BINARY:
                        self._receive(ws, wire.decode(msg.data))
            finally:
                self.connected.clear()
                for flag in self._flags.values():
                    flag.set()  # the engine has already failed these jobs
                for task in [*self._tasks, writer]:
                    task.cancel()
                await asyncio.gather(*self._tasks, writer, return_exceptions=True)
            if ws.close_code == ErrorCode.TIMEOUT:
                log.error(
                    "%s dropped this worker: it did not answer a cancel in time (is the backend "
                    "stuck?); connecting again",
                    self.url,
                )
            else:
                log.warning("disconnected from %s (%s)", self.url, ws.close_code)

    @staticmethod
    async def _write(ws: aiohttp.ClientWebSocketResponse, outgoing: asyncio.Queue[bytes]) -> None:
        """Send what the jobs queue, in order (a job's chunks before its answer)."""
        while True:
            frame = await outgoing.get()
            if ws.closed:
                return
            await ws.send_bytes(frame)

    def _receive(self, ws: aiohttp.ClientWebSocketResponse, message: wire.WorkerMessage) -> None:
        match message:
            case wire.Job(spec):
                flag = self._flags[spec.id] = threading.Event()
                task = asyncio.create_task(self._run(spec, flag))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            case wire.CancelJob(job_id):
                running = self._flags.get(job_id)
                if running is not None:
                    running.set()
            case _:
                log.warning("unexpected %s from the engine", type(message).__name__)

    async def _run(self, spec: JobSpec, flag: threading.Event) -> None:
        reply: wire.WorkerMessage
        outgoing = self._outgoing  # this connection's: a job outlives no connection

        def emit(piece: str) -> None:
            outgoing.put_nowait(wire.encode(wire.Chunk(spec.id, valid_text(piece))))

        try:
            output = await self.executor.run(spec, flag, emit if spec.stream else None)
            reply = wire.Done(spec.id, output)
        except Cancelled:
            reply = wire.Failed(spec.id, ErrorCode.CANCELLED, "cancelled")
        except asyncio.CancelledError:
            flag.set()
            raise
        except Exception as exc:
            log.exception("job %s failed", spec.id)
            reply = wire.Failed(spec.id, ErrorCode.UNAVAILABLE, f"backend failed: {exc}")
        finally:
            self._flags.pop(spec.id, None)
        try:
            frame = wire.encode(reply)
        except Exception as exc:  # the engine must hear of every job, or it takes us for hung
            log.exception("job %s: its answer cannot be sent", spec.id)
            failed = wire.Failed(spec.id, ErrorCode.UNAVAILABLE, f"unsendable answer: {exc}")
            frame = wire.encode(failed)
        outgoing.put_nowait(frame)


def add_worker_parser(sub: Any) -> None:
    """The ``collab worker`` subcommand's options."""
    worker = sub.add_parser("worker", help="run a completion worker that connects to an engine")
    worker.add_argument("--url", required=True, help="the engine, ws://HOST:PORT")
    worker.add_argument(
        "--token", help=f"a worker token (collab token --role worker); else ${TOKEN_ENV}"
    )
    worker.add_argument("--user", help="a worker name for an engine in dev mode (no secret)")
    worker.add_argument(
        "--backend",
        default="local",
        help=f"{', '.join(BACKENDS)}, or module:factory (default: local)",
    )
    worker.add_argument("--model", help="model directory (transformers) or model name (http)")
    worker.add_argument("--endpoint", help="OpenAI-compatible server, http://HOST:PORT (http)")
    worker.add_argument(
        "--capacity",
        type=_capacity,
        help="jobs at once, 1 to 1024 (the batch size; default: 4 local, 16 http, 8 transformers)",
    )
    worker.add_argument("--device", help="cuda, cuda:N or cpu (default: cuda when present)")
    worker.add_argument(
        "--family", choices=[f.value for f in Family], help="prompt format (default: detected)"
    )
    worker.add_argument("--name", help="the worker's name in logs and metrics")
    worker.add_argument(
        "--max-prompt-tokens",
        type=int,
        default=2048,
        help="longest prompt, in the model's tokens; longer ones are cut (default: 2048)",
    )
    worker.add_argument(
        "--log-level", type=str.upper, choices=LOG_LEVELS, default="INFO", help="default: INFO"
    )
    worker.add_argument(
        "--log-format", choices=LOG_FORMATS, default="text", help="text, or JSON lines"
    )


def _capacity(value: str) -> int:
    """``--capacity``: what the engine takes (``wire``'s hello refuses anything else)."""
    try:
        capacity = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not 1 <= capacity <= wire.MAX_CAPACITY:
        raise argparse.ArgumentTypeError(f"{capacity} is not from 1 to {wire.MAX_CAPACITY}")
    return capacity


def _url_problem(url: str) -> str | None:
    """What is wrong with ``url`` as an engine's address, or ``None`` if nothing is."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 (raises on a port that is no number)
    except ValueError as exc:
        return f"--url {url!r}: {exc}; give the engine's address, ws://HOST:PORT"
    if parts.scheme not in ("ws", "wss", "http", "https") or not parts.hostname:
        return f"--url {url!r} is not an engine's address; give ws://HOST:PORT (or wss://)"
    return None


def run_worker_command(args: argparse.Namespace) -> int:
    if problem := _url_problem(args.url):
        print(f"collab worker: {problem}", file=sys.stderr)
        return 2
    configure_logging(args.log_level, args.log_format)
    try:
        backend = create_backend(
            args.backend,
            model=args.model,
            endpoint=args.endpoint,
            capacity=args.capacity,
            device=args.device,
            family=args.family,
            api_key=os.environ.get("COLLAB_COMPLETION_API_KEY"),
        )
    except (ValueError, ImportError, AttributeError) as exc:
        print(f"collab worker: {exc}", file=sys.stderr)
        return 2
    worker = RemoteWorker(
        args.url,
        backend,
        token=args.token or os.environ.get(TOKEN_ENV),
        user=args.user,
        name=args.name,
        max_prompt_tokens=args.max_prompt_tokens,
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await worker.run(stop)

    try:
        asyncio.run(main())
    except WorkerRefused as exc:
        print(f"collab worker: {exc}", file=sys.stderr)
        return 2
    return 0
