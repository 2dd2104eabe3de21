"""``POST /api/complete/stream``: a completion over HTTP whose text arrives while it is made.

The body is ``complete``'s arguments as JSON. The answer is newline-delimited JSON
(``application/x-ndjson``): ``{"text": piece}`` lines as the model generates (the pieces
put together begin the completion), then one ``{"value": answer}`` line, the same answer
``POST /api/complete`` gives, or ``{"error": {code, name, message}}``. A request refused
before any text was sent gets an ordinary JSON error with its HTTP status instead.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web

from protocol.errors import ErrorCode, ProtocolError

from ..server.auth import Authenticator, AuthError
from ..server.config import ServerConfig
from ..server.http_api import authenticate_request, json_error, watch_disconnect
from ..server.http_body import BodyError, read_body
from ..server.ops import check_args
from .service import COMPLETE_ARGS

if TYPE_CHECKING:
    from .service import CompletionService

__all__ = ["handle_stream"]

log = logging.getLogger("collab.completion")

_DONE = object()


async def handle_stream(
    config: ServerConfig, auth: Authenticator, service: CompletionService, request: web.Request
) -> web.StreamResponse:
    try:
        ctx = authenticate_request(auth, request)
        args = await _body(config, request)
        check_args("complete", args, COMPLETE_ARGS)
    except (ProtocolError, AuthError) as exc:
        return json_error(exc)
    except BodyError as exc:
        code = ErrorCode.TOO_LARGE if exc.status == 413 else ErrorCode.TIMEOUT
        return json_error(ProtocolError(code, exc.message), status=exc.status)
    lines: asyncio.Queue[object] = asyncio.Queue()
    args.pop("stream", None)
    task = asyncio.create_task(service.complete(ctx, args, lines.put_nowait))
    task.add_done_callback(lambda _: lines.put_nowait(_DONE))
    watcher = watch_disconnect(request, task)  # the client left: the request is cancelled
    response: web.StreamResponse | None = None
    try:
        while (item := await lines.get()) is not _DONE:
            if response is None:
                response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
                await response.prepare(request)
            await response.write(_line({"text": item}))
        if task.cancelled() and await watcher:
            return response or web.Response(status=499)  # nobody is there to read it
        try:
            value: dict[str, Any] = {"value": _result(task)}
        except ProtocolError as exc:
            if response is None:
                return json_error(exc)
            value = {
                "error": {"code": int(exc.code), "name": exc.code.name, "message": exc.message}
            }
        if response is None:
            return web.json_response(value)
        await response.write(_line(value))
        await response.write_eof()
        return response
    finally:
        task.cancel()  # the client went away: the request is cancelled like any other
        await asyncio.gather(task, watcher, return_exceptions=True)


def _result(task: asyncio.Task[dict[str, Any]]) -> dict[str, Any]:
    try:
        return task.result()
    except (ProtocolError, asyncio.CancelledError):
        raise
    except Exception as exc:
        log.exception("complete (streaming) failed")
        raise ProtocolError(ErrorCode.INTERNAL, f"complete failed: {exc}") from exc


async def _body(config: ServerConfig, request: web.Request) -> dict[str, Any]:
    raw = await read_body(
        request,
        limit=config.max_message,
        idle_timeout=config.body_timeout,
        min_rate=config.min_body_rate,
    )
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, RecursionError):
        raise ProtocolError(ErrorCode.MALFORMED, "body is not JSON") from None
    if not isinstance(body, dict):
        raise ProtocolError(ErrorCode.MALFORMED, "body must be a JSON object")
    return body


def _line(value: dict[str, Any]) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode() + b"\n"
