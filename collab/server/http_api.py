"""``POST /api/<op>``: named operations over HTTP, and the JSON errors every HTTP route sends
(another method on ``/api/<op>`` is answered 405, as JSON too).

The caller of a request is named by ``Authorization: Bearer <token>`` or ``?token=``; in dev
mode by ``?user=NAME`` from loopback. An error is a JSON body, ``{"error": {code, name,
message}}``, whose HTTP status follows its code.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from aiohttp import web

from protocol.errors import ErrorCode, ProtocolError

from ..live.traffic import Traffic
from .auth import Authenticator, AuthError, bearer_token
from .config import ServerConfig
from .http_body import BodyError, read_body
from .ops import CallContext, Operations

__all__ = [
    "ApiEndpoint",
    "Route",
    "RouteHandler",
    "authenticate_request",
    "json_error",
    "watch_disconnect",
]

RouteHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Route = tuple[str, str, RouteHandler]
"""``(method, path, handler)``: an HTTP route a part asks the server to serve."""

_HTTP_STATUS = {
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.READ_ONLY: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.UNKNOWN_DOCUMENT: 404,
    ErrorCode.CONFLICT: 409,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.INTERNAL: 500,
    ErrorCode.UNAVAILABLE: 502,
    ErrorCode.SHUTTING_DOWN: 503,
    ErrorCode.TIMEOUT: 504,
}


def authenticate_request(auth: Authenticator, request: web.Request) -> CallContext:
    """The caller of an HTTP request: ``Authorization: Bearer <token>`` or ``?token=``;
    in dev mode ``?user=NAME`` from loopback. Raises ``AuthError``."""
    token = bearer_token(request.headers.get("Authorization", "")) or request.query.get("token")
    identity = auth.authenticate(token=token, user=request.query.get("user"), remote=request.remote)
    return CallContext(identity)


def json_error(exc: ProtocolError, *, status: int | None = None) -> web.Response:
    """``exc`` as a JSON error body; the HTTP status follows its code unless given."""
    return web.json_response(
        {"error": {"code": int(exc.code), "name": exc.code.name, "message": exc.message}},
        status=_HTTP_STATUS.get(exc.code, 400) if status is None else status,
    )


DISCONNECT_POLL = 0.05  # seconds between two looks at a waiting request's connection
CANCEL_ON_DISCONNECT = frozenset({"complete"})
"""Operations whose answer is worth nothing once the caller has gone: cancelled then (aiohttp
does not cancel a handler whose client disconnects)."""


def watch_disconnect(request: web.Request, task: asyncio.Future[Any]) -> asyncio.Task[bool]:
    """A task that cancels ``task`` if ``request``'s connection is lost before ``task`` ends
    (the client closed it: an aborted ``fetch``, say); its result says whether it did."""

    async def watch() -> bool:
        while not task.done():
            transport = request.transport
            if transport is None or transport.is_closing():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                return True
            await asyncio.wait({task}, timeout=DISCONNECT_POLL)
        return False

    return asyncio.ensure_future(watch())


class ApiEndpoint:
    """``POST /api/<op>``: the operation's JSON arguments in, ``{"value": ...}`` out. The
    operations of ``CANCEL_ON_DISCONNECT`` are cancelled when the caller disconnects. One
    user has at most ``max_user_api_calls`` calls in flight (body read included), all
    connections together; more are answered 429 ``RATE_LIMITED``."""

    def __init__(
        self, config: ServerConfig, auth: Authenticator, ops: Operations, traffic: Traffic
    ) -> None:
        self.config = config
        self.auth = auth
        self.ops = ops
        self.traffic = traffic
        self._calls: collections.Counter[str] = collections.Counter()  # in flight, by user

    async def handle(self, request: web.Request) -> web.Response:
        try:
            ctx = authenticate_request(self.auth, request)
            with self._in_flight(ctx.identity.user):
                return await self._answer(request, ctx)
        except (ProtocolError, AuthError) as exc:
            self.traffic.refuse("error", exc.code)
            return json_error(exc)

    @contextlib.contextmanager
    def _in_flight(self, user: str) -> Iterator[None]:
        """Count one call of ``user`` in flight while the block runs; refuse it
        (``RATE_LIMITED``) if ``max_user_api_calls`` of theirs already are (as ``/ws`` refuses
        a connection's calls past ``max_calls``)."""
        limit = self.config.max_user_api_calls
        if limit and self._calls[user] >= limit:
            raise ProtocolError(
                ErrorCode.RATE_LIMITED,
                f"too many calls in flight: {user!r:.80} has {limit} /api calls running",
            )
        self._calls[user] += 1
        try:
            yield
        finally:
            self._calls[user] -= 1
            if not self._calls[user]:
                del self._calls[user]

    async def _answer(self, request: web.Request, ctx: CallContext) -> web.Response:
        try:
            body = await self._json_body(request)
            op = request.match_info["op"]
            if op not in CANCEL_ON_DISCONNECT:
                value: Any = await self.ops.call(ctx, op, body)
            else:
                task = asyncio.ensure_future(self.ops.call(ctx, op, body))
                if await self._abandoned(request, task):
                    return web.Response(status=499)  # nobody is there to read it
                value = task.result()
        except (ProtocolError, AuthError) as exc:
            self.traffic.refuse("error", exc.code)
            return json_error(exc)
        except BodyError as exc:
            code = ErrorCode.TOO_LARGE if exc.status == 413 else ErrorCode.TIMEOUT
            self.traffic.refuse("error", code)
            return json_error(ProtocolError(code, exc.message), status=exc.status)
        return web.json_response({"value": value})

    @staticmethod
    async def _abandoned(request: web.Request, task: asyncio.Future[Any]) -> bool:
        """Wait for ``task``; whether it was cancelled because the caller disconnected."""
        watcher = watch_disconnect(request, task)
        try:
            await asyncio.wait({task})
        finally:
            if not task.done():  # this handler was cancelled (the server stops)
                task.cancel()
        return await watcher

    async def not_allowed(self, request: web.Request) -> web.Response:
        """Any other method on ``/api/<op>``: 405 with ``Allow: POST``, as a JSON error."""
        message = f"{request.method} is not allowed: operations are POST /api/<op> with a JSON body"
        self.traffic.refuse("error", ErrorCode.MALFORMED)
        response = json_error(ProtocolError(ErrorCode.MALFORMED, message), status=405)
        response.headers["Allow"] = "POST"
        return response

    async def _json_body(self, request: web.Request) -> dict[str, Any]:
        """The request's JSON object, read under the body size cap and timeouts; ``{}`` when
        there is no body. Raises ``BodyError``, or ``ProtocolError(MALFORMED)`` for anything
        that does not parse (deep nesting included) or is not an object."""
        if not request.can_read_body:
            return {}
        config = self.config
        raw = await read_body(
            request,
            limit=min(config.max_api_body, config.max_message),
            idle_timeout=config.body_timeout,
            min_rate=config.min_body_rate,
        )
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            # RecursionError: nesting deeper than the interpreter's recursion limit
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            raise ProtocolError(ErrorCode.MALFORMED, f"body is not JSON: {reason}") from None
        if not isinstance(body, dict):
            raise ProtocolError(ErrorCode.MALFORMED, "body must be a JSON object")
        return body
