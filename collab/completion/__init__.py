"""AI completions: fill-in-the-middle prompts built from live documents, run by workers.

``install(server)`` adds the ``complete``, ``complete.accept``, ``complete.cancel`` and
``complete.metrics`` operations (``/ws`` calls and ``POST /api/<op>``), the streaming
``POST /api/complete/stream``, the ``/worker`` endpoint for remote workers, and the embedded
worker that runs the backend named by ``ServerConfig.completion_backend`` (``"none"`` for
remote workers only). ``GET /metrics``
(``collab.server.metrics``) reports the figures as ``collab_completion_*`` series.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from .backend import Cancelled, CompletionBackend, Generated, Prompt
from .backends import create_backend
from .prompts import ContextFile, Family, PromptParts, detect_family, render
from .service import CompletionService
from .streaming import handle_stream
from .worker_endpoint import handle_worker

if TYPE_CHECKING:
    from ..server.app import CollabServer

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


def install(server: CollabServer) -> CompletionService:
    """Add completions to ``server`` (call before it starts)."""
    config = server.config
    backend = None
    if config.completion_backend != "none":
        backend = create_backend(
            config.completion_backend,
            model=config.completion_model,
            endpoint=config.completion_endpoint,
            capacity=config.completion_capacity,
        )
    service = CompletionService(server, backend)
    server.ops.register("complete", service.complete)
    server.ops.register("complete.accept", service.accept)
    server.ops.register("complete.cancel", service.cancel)
    server.ops.register("complete.metrics", service.metrics_op)

    async def worker_route(request: web.Request) -> web.StreamResponse:
        return await handle_worker(
            server, service.pool, request, max_chars=config.completion_max_chars
        )

    async def stream_route(request: web.Request) -> web.StreamResponse:
        return await handle_stream(server, service, request)

    server.add_route("GET", "/worker", worker_route)
    server.add_route("POST", "/api/complete/stream", stream_route)
    server.services.append(service)
    return service
