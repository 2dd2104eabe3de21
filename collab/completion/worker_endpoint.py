"""``GET /worker``: where completion workers connect (a WebSocket, worker tokens only)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass

from aiohttp import WSMsgType, web

from protocol.errors import ErrorCode, ProtocolError

from ..live.outbox import Outbox
from ..live.traffic import Traffic
from ..server.auth import Authenticator, AuthError, Role, end_at_expiry
from ..server.config import ServerConfig
from ..server.http_api import authenticate_request, json_error
from ..server.sockets import WebSockets
from . import wire
from .pool import QueuedJob, WorkerPool

__all__ = ["RemoteWorkerLink", "WorkerEndpoint", "handle_worker"]

log = logging.getLogger("collab.completion.workers")


@dataclass(frozen=True, slots=True)
class WorkerEndpoint:
    """The parts ``/worker`` serves with, given by the composition root."""

    auth: Authenticator
    sockets: WebSockets
    traffic: Traffic
    pool: WorkerPool
    max_chars: int
    """Longest completion text a worker may return (longer is cut)."""
    config: ServerConfig

    async def handle(self, request: web.Request) -> web.StreamResponse:
        return await handle_worker(self, request)


class RemoteWorkerLink:
    """A connected ``collab worker`` as the pool sees it (:class:`~.pool.Droppable`: the pool
    closes the connection of a worker that does not answer a cancel in time)."""

    def __init__(self, outbox: Outbox, hello: wire.WorkerHello, user: str) -> None:
        self.outbox = outbox
        self.name = f"{hello.name} ({user}, {hello.model})"
        self.capacity = hello.capacity
        self.model = hello.model
        self.running: dict[str, QueuedJob] = {}

    def send(self, job: QueuedJob) -> None:
        self.outbox.put(wire.encode(wire.Job(job.spec)))

    def cancel(self, job_id: str) -> None:
        self.outbox.put(wire.encode(wire.CancelJob(job_id)))

    def close(self, code: ErrorCode, reason: str) -> None:
        """Close the connection with ``code`` and ``reason``; the worker may connect again."""
        self.outbox.abort(code, reason)


async def handle_worker(endpoint: WorkerEndpoint, request: web.Request) -> web.StreamResponse:
    pool, max_chars = endpoint.pool, endpoint.max_chars
    try:
        identity = authenticate_request(endpoint.auth, request).identity
        if identity.role is not Role.WORKER and not endpoint.auth.dev_mode:
            raise AuthError(ErrorCode.FORBIDDEN, "a worker token is required")
    except ProtocolError as exc:
        log.warning("worker from %s refused: %s", request.remote, exc.message)
        endpoint.traffic.refuse("error", exc.code)
        return json_error(exc)
    ws = endpoint.sockets.websocket()
    await ws.prepare(request)
    outbox = Outbox(
        ws,
        limit=4096,
        name=f"worker {request.remote} ({identity.user})",
        traffic=endpoint.traffic,
    )
    writer = asyncio.create_task(outbox.run())
    endpoint.sockets.track(ws)
    link: RemoteWorkerLink | None = None

    def expired(code: ErrorCode, reason: str) -> None:
        if link is not None:  # no job more for it, from now
            pool.remove(link, "its token expired")
        outbox.abort(code, reason)

    expiry = end_at_expiry(identity, expired)
    try:
        msg = await ws.receive(timeout=endpoint.config.hello_timeout)
        hello = wire.decode(msg.data) if msg.type is WSMsgType.BINARY else None
        if not isinstance(hello, wire.WorkerHello):
            raise ProtocolError(ErrorCode.MALFORMED, "the first message must be a worker hello")
        link = RemoteWorkerLink(outbox, hello, identity.user)
        outbox.put(wire.encode(wire.WorkerWelcome()))
        pool.add(link)
        streamed: dict[str, int] = {}  # characters of each job's text streamed so far
        async for msg in ws:
            if msg.type is not WSMsgType.BINARY:
                continue
            outbox.traffic.bytes_in += len(msg.data)
            match wire.decode(msg.data):
                case wire.Chunk(job_id, piece):
                    if job_id not in link.running:
                        continue
                    sent = streamed.get(job_id, 0)
                    piece = piece[: max(0, max_chars - sent)]  # as the answer's text is cut
                    if piece:
                        streamed[job_id] = sent + len(piece)
                        pool.streamed(link, job_id, piece)
                case wire.Done(job_id, output):
                    streamed.pop(job_id, None)
                    if len(output.text) > max_chars:
                        output = dataclasses.replace(output, text=output.text[:max_chars])
                    pool.finished(link, job_id, output)
                case wire.Failed(job_id, code, message):
                    streamed.pop(job_id, None)
                    pool.finished(link, job_id, ProtocolError(code, message))
                case other:
                    raise ProtocolError(
                        ErrorCode.MALFORMED, f"{type(other).__name__} is engine-only"
                    )
    except TimeoutError:
        outbox.abort(ErrorCode.UNAUTHORIZED, "no worker hello received in time")
    except ProtocolError as exc:
        outbox.abort(exc.code, exc.message)
    finally:
        if expiry is not None:
            expiry.cancel()
        endpoint.sockets.untrack(ws)
        if link is not None:
            pool.remove(link, "disconnected")
        outbox.finish()
        await asyncio.gather(writer, return_exceptions=True)
    return ws
