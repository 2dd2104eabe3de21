"""``GET /worker``: where completion workers connect (a WebSocket, worker tokens only)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import TYPE_CHECKING

from aiohttp import WSMsgType, web

from protocol.errors import ErrorCode, ProtocolError

from ..live.outbox import Outbox
from ..server.auth import AuthError, Role
from . import wire
from .pool import QueuedJob, WorkerPool

if TYPE_CHECKING:
    from ..server.app import CollabServer

__all__ = ["RemoteWorkerLink", "handle_worker"]

log = logging.getLogger("collab.completion.workers")


class RemoteWorkerLink:
    """A connected ``collab worker`` as the pool sees it."""

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


async def handle_worker(
    server: CollabServer, pool: WorkerPool, request: web.Request, *, max_chars: int
) -> web.StreamResponse:
    try:
        identity = server.authenticate_http(request).identity
        if identity.role is not Role.WORKER and not server.auth.dev_mode:
            raise AuthError(ErrorCode.FORBIDDEN, "a worker token is required")
    except ProtocolError as exc:
        log.warning("worker from %s refused: %s", request.remote, exc.message)
        server.metrics.worker.refuse("error", exc.code)
        return server.json_error(exc)
    ws = server.websocket()
    await ws.prepare(request)
    outbox = Outbox(
        ws,
        limit=4096,
        name=f"worker {request.remote} ({identity.user})",
        traffic=server.metrics.worker,
    )
    writer = asyncio.create_task(outbox.run())
    server.track(ws)
    link: RemoteWorkerLink | None = None
    try:
        msg = await ws.receive(timeout=server.config.hello_timeout)
        hello = wire.decode(msg.data) if msg.type is WSMsgType.BINARY else None
        if not isinstance(hello, wire.WorkerHello):
            raise ProtocolError(ErrorCode.MALFORMED, "the first message must be a worker hello")
        link = RemoteWorkerLink(outbox, hello, identity.user)
        outbox.put(wire.encode(wire.WorkerWelcome()))
        pool.add(link)
        async for msg in ws:
            if msg.type is not WSMsgType.BINARY:
                continue
            outbox.traffic.bytes_in += len(msg.data)
            match wire.decode(msg.data):
                case wire.Chunk(job_id, piece):
                    pool.streamed(link, job_id, piece)
                case wire.Done(job_id, output):
                    if len(output.text) > max_chars:
                        output = dataclasses.replace(output, text=output.text[:max_chars])
                    pool.finished(link, job_id, output)
                case wire.Failed(job_id, code, message):
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
        server.untrack(ws)
        if link is not None:
            pool.remove(link, "disconnected")
        outbox.finish()
        await asyncio.gather(writer, return_exceptions=True)
    return ws
