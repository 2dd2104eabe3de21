"""AI completions: fill-in-the-middle prompts built from live documents, run by workers.

``install(...)`` adds the ``complete``, ``complete.accept``, ``complete.cancel`` and
``complete.metrics`` operations (``/ws`` calls and ``POST /api/<op>``), the streaming
``POST /api/complete/stream``, the ``/worker`` endpoint for remote workers, and the embedded
worker that runs the backend named by ``ServerConfig.completion_backend`` (``"none"`` for
remote workers only). ``GET /metrics``
(``collab.server.metrics``) reports the figures as ``collab_completion_*`` series.
"""

from __future__ import annotations

from aiohttp import web

from gitsync import Repositories

from ..live.rooms import Rooms
from ..live.traffic import Traffic
from ..server.auth import Authenticator
from ..server.config import ServerConfig
from ..server.http_api import Route
from ..server.ops import Operations
from ..server.sockets import WebSockets
from .backend import Cancelled, CompletionBackend, Generated, Prompt
from .backends import create_backend
from .prompts import ContextFile, Family, PromptParts, detect_family, render
from .service import COMPLETE_ARGS, CompletionService
from .streaming import handle_stream
from .worker_endpoint import WorkerEndpoint

__all__ = [
    "Cancelled",
    "CompletionBackend",
    "CompletionService",
    "ContextFile",
    "Family",
    "Generated",
    "Prompt",
    "PromptParts",
    "create_backend",
    "detect_family",
    "install",
    "render",
]


def install(
    config: ServerConfig,
    ops: Operations,
    *,
    auth: Authenticator,
    rooms: Rooms,
    repos: Repositories,
    sockets: WebSockets,
    traffic: Traffic,
) -> tuple[CompletionService, list[Route]]:
    """Build completions for a server (before it starts): the service, its operations
    registered on ``ops``, and the HTTP routes to serve. The server starts and stops the
    service with its other parts; ``traffic`` counts the ``/worker`` connections."""
    backend = None
    if config.completion_backend != "none":
        backend = create_backend(
            config.completion_backend,
            model=config.completion_model,
            endpoint=config.completion_endpoint,
            capacity=config.completion_capacity,
        )
    service = CompletionService(config, rooms, repos, backend)
    ops.register("complete", service.complete, COMPLETE_ARGS)
    ops.register("complete.accept", service.accept, ("id", "length"))
    ops.register("complete.cancel", service.cancel, ("doc",))
    ops.register("complete.metrics", service.metrics_op)
    workers = WorkerEndpoint(
        auth,
        sockets,
        traffic,
        service.pool,
        max_chars=config.completion_max_chars,
        config=config,
    )

    async def stream_route(request: web.Request) -> web.StreamResponse:
        return await handle_stream(config, auth, service, request)

    return service, [
        ("GET", "/worker", workers.handle),
        ("POST", "/api/complete/stream", stream_route),
    ]
