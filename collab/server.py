"""The aiohttp server: routes, shared services, start and stop."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Protocol

from aiohttp import web

from gitsync import Repositories
from protocol import messages as m
from protocol.errors import ErrorCode, ProtocolError
from protocol.yjs import YjsLimits

from .auth import Authenticator, AuthError, DevAuthenticator, TokenAuthenticator, is_loopback
from .branches import Branches
from .completion import install as install_completion
from .config import ServerConfig
from .data_lock import DataDirLock
from .events import EventHub
from .git_http import GitBridge
from .git_ops import register_git_ops
from .git_sync import GitSync
from .http_body import BodyError, read_body
from .http_timeouts import GuardedSite, HeaderDeadlines
from .memory_store import MemoryStore
from .merges import Merges
from .metrics import ServerMetrics
from .ops import CallContext, Operations
from .outbox import close_ws
from .quotas import UserQuotas
from .rooms import Rooms
from .sqlite_store import SQLiteStore
from .status_ops import register_status_ops
from .store import Store
from .tree_ops import register_tree_ops
from .web import install_web
from .websocket import CollabWebSocket
from .ws_endpoint import handle_ws
from .yjs_endpoint import handle_yjs

__all__ = ["REPOS_LOCK", "CollabServer"]

REPOS_LOCK = ".collab.lock"
"""The file in the repositories' directory a server locks (it owns them while it runs)."""

log = logging.getLogger("collab.server")

RouteHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Service(Protocol):
    """A part of the engine with a lifetime: started after the store, stopped before it."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


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


class CollabServer:
    """The engine: ``/yjs/...`` for stock Yjs clients, ``/ws`` for the engine protocol.

    Use ``async with CollabServer(config) as server`` or explicit :meth:`start`/:meth:`stop`.
    """

    def __init__(self, config: ServerConfig, *, store: Store | None = None) -> None:
        self.config = config
        self.auth: Authenticator
        if config.secret is None:
            if not is_loopback(config.host) and config.host != "localhost":
                raise ValueError(
                    f"dev mode (no secret) listens on loopback only, not {config.host}: set "
                    "COLLAB_SECRET (or --secret-file) to serve other machines, or use "
                    "--host 127.0.0.1"
                )
            self.auth = DevAuthenticator()
        else:
            self.auth = TokenAuthenticator(config.secret)
        self.store: Store = store or self._default_store(config)
        self._data_lock = DataDirLock(config.data_dir)
        self.store_problems: list[str] = []  # what a check of the store file found wrong
        self._store_check: asyncio.Task[None] | None = None
        # the server owns its repositories: a lock file in them is a dead writer's
        self._repos_lock = DataDirLock(config.repos, REPOS_LOCK)
        self.repos = Repositories(config.repos)
        self.events = EventHub()
        self.rooms = Rooms(
            self.store,
            self.repos,
            grace=config.grace,
            compact_every=config.compact_every,
            max_file=config.max_file,
            max_document=config.max_document,
            events=self.events,
        )
        self.quotas = UserQuotas(
            update_rate=config.user_update_rate,
            update_burst=config.user_update_burst,
            byte_rate=config.user_byte_rate,
            byte_burst=config.user_byte_burst,
        )
        self.yjs_limits = YjsLimits(max_message=config.max_message, max_update=config.max_message)
        self.ws_limits = m.Limits(max_message=config.max_message, max_bin=config.max_message)
        self.stopping = False
        self._sockets: weakref.WeakSet[web.WebSocketResponse] = weakref.WeakSet()
        self._runner: web.AppRunner | None = None
        self._header_deadlines = HeaderDeadlines(config.header_timeout)
        self._lingering: set[asyncio.Task[None]] = set()  # closes of refused WebSockets
        self.port = config.port
        self._store_started = False
        self._services_started: list[Service] = []
        self._started_at: float | None = None
        self.ops = Operations()
        self.services: list[Service] = []
        self._routes: list[tuple[str, str, RouteHandler]] = []
        self.git = GitSync(
            self.repos,
            self.rooms,
            self.store,
            self.events,
            idle=config.commit_idle,
            max_lag=config.commit_max_lag,
            poll=config.ref_poll,
            state_dir=None if config.store == "memory" else config.data_dir,
            owns_repos=config.store != "memory",
        )
        self.services.append(self.git)
        self.branches = Branches(self.repos, self.rooms, self.store, self.git, self.events)
        self.merges = Merges(self.repos, self.branches)
        register_git_ops(self.ops, self.branches, self.merges, self.events)
        register_status_ops(self, self.branches)
        register_tree_ops(self.ops, self.branches)
        if config.web:
            install_web(self)  # the web editor at /
        self.git_bridge = GitBridge(self)
        self.completion = install_completion(self)
        self.metrics = ServerMetrics(self)
        self.add_route("GET", "/metrics", self.metrics.handle)

    @staticmethod
    def _default_store(config: ServerConfig) -> Store:
        if config.store == "memory":
            return MemoryStore()
        return SQLiteStore(
            config.data_dir / "store.sqlite3",
            group_window=config.group_window,
            sync_window=config.sync_window,
        )

    @property
    def uptime(self) -> float:
        """Seconds since the server started serving (0 when it is not serving)."""
        return 0.0 if self._started_at is None else time.monotonic() - self._started_at

    @property
    def url(self) -> str:
        return f"ws://{self.config.host}:{self.port}"

    def websocket(self) -> web.WebSocketResponse:
        return CollabWebSocket(
            max_message=self.config.max_message,
            heartbeat=self.config.heartbeat,
            autoping=True,
            # Yjs updates are small and already compact; per-message deflate costs both ends
            # more CPU than it saves (and stock y-websocket servers do not offer it).
            compress=False,
            # after refusing an oversized message, what the peer still sends is discarded this
            # long at most, so that it reads the close frame instead of a reset
            linger=self.config.body_timeout,
            lingering=self._lingering,
        )

    def track(self, ws: web.WebSocketResponse) -> None:
        self._sockets.add(ws)

    def untrack(self, ws: web.WebSocketResponse) -> None:
        self._sockets.discard(ws)

    def add_route(self, method: str, path: str, handler: RouteHandler) -> None:
        """Add an HTTP route (call before :meth:`start`)."""
        self._routes.append((method, path, handler))

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.max_message)
        self._header_deadlines.install(app)
        app.router.add_get("/yjs/{room:.+}", self._yjs)
        app.router.add_get("/ws", self._ws)
        app.router.add_get("/healthz", self._health)
        app.router.add_post("/api/{op}", self._api)
        for method, path, handler in self._routes:
            app.router.add_route(method, path, handler)
        return app

    def authenticate_http(self, request: web.Request) -> CallContext:
        """The caller of an HTTP request: ``Authorization: Bearer <token>`` or ``?token=``;
        in dev mode ``?user=NAME`` from loopback. Raises ``AuthError``."""
        token = request.query.get("token")
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            token = header.removeprefix("Bearer ").strip()
        identity = self.auth.authenticate(
            token=token, user=request.query.get("user"), remote=request.remote
        )
        return CallContext(self, identity)

    @staticmethod
    def json_error(exc: ProtocolError, *, status: int | None = None) -> web.Response:
        """``exc`` as a JSON error body; the HTTP status follows its code unless given."""
        return web.json_response(
            {"error": {"code": int(exc.code), "name": exc.code.name, "message": exc.message}},
            status=_HTTP_STATUS.get(exc.code, 400) if status is None else status,
        )

    async def _api(self, request: web.Request) -> web.Response:
        try:
            ctx = self.authenticate_http(request)
            body = await self._json_body(request)
            value: Any = await self.ops.call(ctx, request.match_info["op"], body)
        except (ProtocolError, AuthError) as exc:
            self.metrics.api.refuse("error", exc.code)
            return self.json_error(exc)
        except BodyError as exc:
            code = ErrorCode.TOO_LARGE if exc.status == 413 else ErrorCode.TIMEOUT
            self.metrics.api.refuse("error", code)
            return self.json_error(ProtocolError(code, exc.message), status=exc.status)
        return web.json_response({"value": value})

    async def _json_body(self, request: web.Request) -> dict[str, Any]:
        """The request's JSON object, read under the body size cap and timeouts; ``{}`` when
        there is no body. Raises ``BodyError``, or ``ProtocolError(MALFORMED)`` for anything
        that does not parse (deep nesting included) or is not an object."""
        if not request.can_read_body:
            return {}
        config = self.config
        raw = await read_body(
            request,
            limit=config.max_message,
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

    async def _yjs(self, request: web.Request) -> web.WebSocketResponse:
        return await handle_yjs(self, request)

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        return await handle_ws(self, request)

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "ok": True,
                "rooms": len(self.rooms),
                "connections": len(self._sockets),
                "damaged": dict(self.rooms.damaged),
                "held": self.git.held_files(),
                "store": list(self.store_problems),
            }
        )

    async def _check_store(self) -> None:
        """After a crash, ask SQLite whether the store file is sound (it reads all of it:
        in a thread, beside the serving) and report what it finds."""
        if not isinstance(self.store, SQLiteStore):
            return
        problems = await asyncio.to_thread(self.store.quick_check)
        if problems:
            self.store_problems = problems
            log.error(
                "the store file is damaged (%s); documents on damaged pages are quarantined "
                "when opened: stop the server and run `collab store repair`",
                "; ".join(problems[:3]),
            )

    async def start(self) -> None:
        """Start serving. Raises ``FileNotFoundError`` when the repositories' directory is
        missing, ``DataDirBusy`` when another process holds the data or repositories'
        directory, and ``OSError`` when the port cannot be bound (``errno.EADDRINUSE``: in
        use); whatever had started by then is stopped again first."""
        if not self.config.repos.is_dir():
            raise FileNotFoundError(
                f"the repositories' directory {self.config.repos} does not exist"
            )
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        if self.config.store != "memory":  # one server (or store repair) per data directory
            self._data_lock.acquire()
            try:
                self._repos_lock.acquire()
            except BaseException:
                self._data_lock.release()
                raise
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise
        self._started_at = time.monotonic()

    async def _start(self) -> None:
        await self.store.start()
        self._store_started = True
        for service in self.services:
            await service.start()
            self._services_started.append(service)
        if not self.git.clean_start:
            self._store_check = asyncio.create_task(self._check_store(), name="store check")
        if self.auth.dev_mode:
            log.warning(
                "DEV MODE: no server secret; anyone on loopback may connect as ?user=NAME. "
                "Set a secret (COLLAB_SECRET) before serving anyone else."
            )
        self._runner = web.AppRunner(
            self.app(), handle_signals=False, access_log=None, shutdown_timeout=1.0
        )
        await self._runner.setup()
        # not web.TCPSite: every connection must get a deadline for its request headers
        site = GuardedSite(self._runner, self.config.host, self.config.port, self._header_deadlines)
        await site.start()
        self.port = site.port
        names = await asyncio.to_thread(self.repos.names)
        log.info(
            "serving %s on %s: %s",
            self.config.repos,
            self.url,
            ", ".join(names) if names else "no repositories yet (DIR/NAME or DIR/NAME.git)",
        )
        for name in names:
            if await asyncio.to_thread(self.repos.has_work_tree, name):
                log.warning(
                    "%s has a work tree, which the engine never updates: `git status` there "
                    "shows its commits undone; serve a bare clone (git clone --bare) instead",
                    name,
                )

    async def stop(self) -> None:
        """Close every connection, persist every room, then close the store."""
        self.stopping = True
        if self._store_check is not None:
            await asyncio.gather(self._store_check, return_exceptions=True)
        await asyncio.gather(
            *(
                close_ws(ws, ErrorCode.SHUTTING_DOWN, "server stopping")
                for ws in list(self._sockets)
            ),
            return_exceptions=True,
        )
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for task in list(self._lingering):
            task.cancel()
        await asyncio.gather(*self._lingering, return_exceptions=True)
        started, self._services_started = self._services_started, []
        for service in reversed(started):
            try:
                await service.stop()
            except Exception:
                log.exception("stopping %s failed", type(service).__name__)
        await self.rooms.close()
        if self._store_started:
            self._store_started = False
            await self.store.stop()
        await asyncio.to_thread(self.repos.close)  # waits for git work still running
        self._repos_lock.release()
        self._data_lock.release()
        if self._started_at is not None:
            log.info("stopped (served for %s)", _duration(time.monotonic() - self._started_at))
            self._started_at = None

    async def __aenter__(self) -> CollabServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def _duration(seconds: float) -> str:
    """``seconds`` the way a person reads a running time: 4.2 s, 3 min 20 s, 5 h 02 min."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min {int(seconds % 60):02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"
