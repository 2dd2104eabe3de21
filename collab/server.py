"""The aiohttp server: routes, shared services, start and stop."""

from __future__ import annotations

import asyncio
import logging
import weakref
from types import TracebackType

from aiohttp import web

from gitsync import Repositories
from protocol import messages as m
from protocol.errors import ErrorCode
from protocol.yjs import YjsLimits

from .auth import Authenticator, DevAuthenticator, TokenAuthenticator, is_loopback
from .config import ServerConfig
from .memory_store import MemoryStore
from .outbox import close_ws
from .rooms import Rooms
from .sqlite_store import SQLiteStore
from .store import Store
from .ws_endpoint import handle_ws
from .yjs_endpoint import handle_yjs

__all__ = ["CollabServer"]

log = logging.getLogger("collab.server")


class CollabServer:
    """The engine: ``/yjs/...`` for stock Yjs clients, ``/ws`` for the engine protocol.

    Use ``async with CollabServer(config) as server`` or explicit :meth:`start`/:meth:`stop`.
    """

    def __init__(self, config: ServerConfig, *, store: Store | None = None) -> None:
        self.config = config
        self.auth: Authenticator
        if config.secret is None:
            if not is_loopback(config.host) and config.host != "localhost":
                raise ValueError("dev mode (no secret) only binds to a loopback address")
            self.auth = DevAuthenticator()
        else:
            self.auth = TokenAuthenticator(config.secret)
        self.store: Store = store or self._default_store(config)
        self.repos = Repositories(config.repos)
        self.rooms = Rooms(
            self.store, self.repos, grace=config.grace, compact_every=config.compact_every
        )
        self.yjs_limits = YjsLimits(max_message=config.max_message, max_update=config.max_message)
        self.ws_limits = m.Limits(max_message=config.max_message, max_bin=config.max_message)
        self.stopping = False
        self._sockets: weakref.WeakSet[web.WebSocketResponse] = weakref.WeakSet()
        self._runner: web.AppRunner | None = None
        self.port = config.port

    @staticmethod
    def _default_store(config: ServerConfig) -> Store:
        if config.store == "memory":
            return MemoryStore()
        return SQLiteStore(config.data_dir / "store.sqlite3", group_window=config.group_window)

    @property
    def url(self) -> str:
        return f"ws://{self.config.host}:{self.port}"

    def websocket(self) -> web.WebSocketResponse:
        return web.WebSocketResponse(
            max_msg_size=self.config.max_message,
            heartbeat=self.config.heartbeat,
            autoping=True,
            # Yjs updates are small and already compact; per-message deflate costs both ends
            # more CPU than it saves (and stock y-websocket servers do not offer it).
            compress=False,
        )

    def track(self, ws: web.WebSocketResponse) -> None:
        self._sockets.add(ws)

    def untrack(self, ws: web.WebSocketResponse) -> None:
        self._sockets.discard(ws)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.max_message)
        app.router.add_get("/yjs/{room:.+}", self._yjs)
        app.router.add_get("/ws", self._ws)
        app.router.add_get("/healthz", self._health)
        return app

    async def _yjs(self, request: web.Request) -> web.WebSocketResponse:
        return await handle_yjs(self, request)

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        return await handle_ws(self, request)

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"ok": True, "rooms": len(self.rooms), "connections": len(self._sockets)}
        )

    async def start(self) -> None:
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        await self.store.start()
        if self.auth.dev_mode:
            log.warning(
                "DEV MODE: no server secret; anyone on loopback may connect as ?user=NAME. "
                "Set a secret (COLLAB_SECRET) before serving anyone else."
            )
        self._runner = web.AppRunner(
            self.app(), handle_signals=False, access_log=None, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        for sock in getattr(site._server, "sockets", None) or []:
            self.port = int(sock.getsockname()[1])
            break
        log.info("serving %s on %s", self.config.repos, self.url)

    async def stop(self) -> None:
        """Close every connection, persist every room, then close the store."""
        self.stopping = True
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
        await self.rooms.close()
        await self.store.stop()
        self.repos.close()

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
