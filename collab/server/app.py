"""The aiohttp server, the composition root: builds every part, serves their routes, starts
and stops them in order.

Only this module knows all the parts. Each part receives the parts it uses (the room
registry, the store, the authenticator, the operation registry, the sockets...), never the
server itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Protocol

from aiohttp import web

from gitsync import Repositories
from protocol import messages as m
from protocol.errors import ErrorCode
from protocol.yjs import YjsLimits

from ..bus.link import ClusterLink
from ..completion import install as install_completion
from ..git.branch_ops import register_git_ops
from ..git.branch_sync import GitSync
from ..git.branches import Branches
from ..git.merges import Merges
from ..git.tree_ops import register_tree_ops
from ..lifecycle import Lifecycle
from ..live.events import EventHub
from ..live.quotas import UserQuotas
from ..live.rooms import Rooms
from ..live.traffic import Traffic
from ..store.base import Store, WriteCounts
from ..store.data_lock import DataDirLock
from ..store.memory_store import MemoryStore
from ..store.sqlite_store import SQLiteStore
from ..web import web_routes
from .auth import Authenticator, DevAuthenticator, TokenAuthenticator, is_loopback
from .config import ServerConfig
from .git_http import GitBridge
from .http_api import ApiEndpoint, RouteHandler, authenticate_request, json_error
from .http_timeouts import GuardedSite, HeaderDeadlines
from .metrics import ServerMetrics
from .ops import CallContext, Operations
from .peer_faults import quiet_peer_faults
from .sockets import Sockets
from .status_ops import StatusSources, register_status_ops
from .ws_endpoint import WsEndpoint
from .yjs_endpoint import YjsEndpoint

if TYPE_CHECKING:
    from ..bus.cluster import Cluster
    from ..bus.jobs import ClusterJobs

__all__ = ["REPOS_LOCK", "CollabServer"]

REPOS_LOCK = ".collab.lock"
"""The file in the repositories' directory a server locks (it owns them while it runs)."""

log = logging.getLogger("collab.server")


class Service(Protocol):
    """A part of the engine with a lifetime: started after the store, stopped before it."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class CollabServer(Lifecycle):
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
        self.cluster: Cluster | None = None
        if config.redis is not None:  # a node of a cluster: the store and bus are in Redis
            from ..bus.cluster import Cluster

            self.cluster = Cluster(config.redis, config.node_id)
        self.store: Store = store or (
            self.cluster.store if self.cluster is not None else self._default_store(config)
        )
        self._data_lock = DataDirLock(
            config.data_dir, remedy="stop it first, or give this one another --data-dir"
        )
        self.store_problems: list[str] = []  # what a check of the store file found wrong
        self._store_check: asyncio.Task[None] | None = None
        # the server owns its repositories: a lock file in them is a dead writer's
        self._repos_lock = DataDirLock(
            config.repos,
            REPOS_LOCK,
            remedy="stop it first: one server at a time serves a --repos directory (several "
            "share one as a cluster, with --redis)",
        )
        self.repos = Repositories(config.repos)
        self.events = EventHub()
        self.yjs_limits = YjsLimits(
            max_message=config.max_message,
            max_update=config.max_message,
            max_new_clients=config.max_new_clients,
            max_deleted_ranges=config.max_deleted_ranges,
        )
        self.rooms = Rooms(
            self.store,
            self.repos,
            grace=config.grace,
            compact_every=config.compact_every,
            max_file=config.max_file,
            max_document=config.max_document,
            events=self.events,
            limits=self.yjs_limits,
        )
        if self.cluster is not None:
            cluster = self.cluster
            ClusterLink(
                self.rooms,
                cluster.bus,
                self.store,
                store_reachable=lambda: cluster.store.reachable,
            )
            cluster.store.on_unreachable.append(self._serve_unwritten)
            self.cluster.bus.describe = self._describe
            self.cluster.bus.open_branches = self._open_branches
            self.cluster.bus.on_displaced.append(self._fail)
        self.quotas = UserQuotas(
            update_rate=config.user_update_rate,
            update_burst=config.user_update_burst,
            byte_rate=config.user_byte_rate,
            byte_burst=config.user_byte_burst,
            awareness_rate=config.user_awareness_rate,
            awareness_burst=config.user_awareness_burst,
            answer_rate=config.user_answer_rate,
            answer_burst=config.user_answer_burst,
        )
        self.ws_limits = m.Limits(max_message=config.max_message, max_bin=config.max_message)
        self.stopping = False
        self.failure: str | None = None
        """Why this server must stop, once ``failed`` is set."""
        self.failed = asyncio.Event()
        """Set when the server can no longer serve (in a cluster: another process took its
        node id); whoever runs it stops it (``collab serve`` exits with ``failure``)."""
        self.sockets = Sockets(
            max_message=config.max_message,
            heartbeat=config.heartbeat,
            linger=config.body_timeout,
            max_per_user=config.max_user_sockets,
            user_send_bytes=config.user_send_bytes,
        )
        self._runner: web.AppRunner | None = None
        self._header_deadlines = HeaderDeadlines(config.header_timeout)
        self.port = config.port
        self._store_started = False
        self._services_started: list[Service] = []
        self._started_at: float | None = None
        self.ops = Operations()
        self.services: list[Service] = []
        if self.cluster is not None:  # the bus before the git work, which takes leases
            self.services.append(self.cluster)
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
            # a cluster's nodes share the repositories: a lock there may be a live node's
            owns_repos=self.cluster is None,
            leases=self.cluster.leases if self.cluster is not None else None,
        )
        self.services.append(self.git)
        self.branches = Branches(self.repos, self.rooms, self.store, self.git, self.events)
        if self.cluster is not None:  # a branch open on another node is not deleted either
            cluster = self.cluster
            self.branches.open_elsewhere = lambda repo, name: cluster.open_elsewhere(
                f"{repo}/{name}"
            )
            # (a branch deleted outside: one its last beat did not list yet is counted too)
            self.git.open_elsewhere = lambda repo, name: cluster.open_elsewhere_now(
                f"{repo}/{name}"
            )
            # a deletion holds every node's opens of the branch while it looks and deletes
            self.branches.opens_held_elsewhere = lambda repo, name: cluster.opens_held(
                f"{repo}/{name}"
            )
            self.rooms.held_elsewhere = cluster.held_by_another
        self.services.append(self.branches)  # stopped before the git work's final commits
        self.merges = Merges(self.repos, self.branches)
        register_git_ops(self.ops, self.branches, self.merges, self.events)
        # each endpoint's counters, read by GET /metrics and server.status
        ws, yjs, worker, api = (Traffic(name) for name in ("ws", "yjs", "worker", "api"))
        register_status_ops(
            self.ops,
            self.branches,
            StatusSources(
                auth=self.auth,
                repos=self.repos,
                rooms=self.rooms,
                git=self.git,
                store=config.store,
                connections=(ws, yjs, worker),
                uptime=lambda: self.uptime,
            ),
        )
        register_tree_ops(self.ops, self.branches)
        if config.web:  # the web editor at /
            for route in web_routes(dev_mode=self.auth.dev_mode):
                self.add_route(*route)
        self.git_bridge = GitBridge(
            config,
            self.auth,
            self.repos,
            self.git,
            self.events,
            self.branches.why_open,
            self.branches.forget_deleted,
        )
        for route in self.git_bridge.routes():
            self.add_route(*route)
        self.completion, routes = install_completion(
            config,
            self.ops,
            auth=self.auth,
            rooms=self.rooms,
            repos=self.repos,
            sockets=self.sockets,
            traffic=worker,
        )
        for route in routes:
            self.add_route(*route)
        self.services.append(self.completion)
        self.cluster_jobs: ClusterJobs | None = None
        if self.cluster is not None:  # workers connected to any node serve every node
            from ..bus.jobs import ClusterJobs

            self.cluster_jobs = ClusterJobs(
                self.cluster.url,
                self.cluster.node_id,
                self.completion.pool,
                max_chars=config.completion_max_chars,
            )
            self.services.append(self.cluster_jobs)
            from ..bus.events import ClusterEvents

            self.services.append(ClusterEvents(self.cluster.url, self.cluster.node_id, self.events))
        self.metrics = ServerMetrics(
            auth=self.auth,
            rooms=self.rooms,
            store=self.store,
            git=self.git,
            merges=self.merges,
            completion=self.completion,
            ws=ws,
            yjs=yjs,
            worker=worker,
            api=api,
            cluster=self.cluster,
        )
        self.add_route("GET", "/metrics", self.metrics.handle)
        self._ws = WsEndpoint(
            config, self.auth, self.rooms, self.quotas, self.ops, self.sockets, ws, self.ws_limits
        )
        self._yjs = YjsEndpoint(
            config, self.auth, self.rooms, self.quotas, self.sockets, yjs, self.yjs_limits
        )
        self._api = ApiEndpoint(config, self.auth, self.ops, api)

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
        """A WebSocket response with the server's limits (see :class:`Sockets`)."""
        return self.sockets.websocket()

    def track(self, ws: web.WebSocketResponse) -> None:
        self.sockets.track(ws)

    def untrack(self, ws: web.WebSocketResponse) -> None:
        self.sockets.untrack(ws)

    def add_route(self, method: str, path: str, handler: RouteHandler) -> None:
        """Add an HTTP route (call before :meth:`start`)."""
        self._routes.append((method, path, handler))

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.max_message)
        self._header_deadlines.install(app)
        app.router.add_get("/yjs/{room:.+}", self._yjs.handle)
        app.router.add_get("/ws", self._ws.handle)
        app.router.add_get("/healthz", self._health)
        app.router.add_post("/api/{op}", self._api.handle)
        app.router.add_route("*", "/api/{op}", self._api.not_allowed)
        for method, path, handler in self._routes:
            app.router.add_route(method, path, handler)
        return app

    def authenticate_http(self, request: web.Request) -> CallContext:
        """The caller of an HTTP request: ``Authorization: Bearer <token>`` or ``?token=``;
        in dev mode ``?user=NAME`` from loopback. Raises ``AuthError``."""
        return authenticate_request(self.auth, request)

    json_error = staticmethod(json_error)

    def _fail(self, reason: str) -> None:
        """This server can no longer serve (another process took its node id): whoever
        runs it stops it (``failed``)."""
        if self.failure is None:
            self.failure = reason
        self.failed.set()

    def _serve_unwritten(self) -> None:
        """The shared store stopped answering: every room sends its peers what waits for
        it, and goes on doing so until the store is back."""
        for room in self.rooms.loaded():
            room.send_unwritten()

    def _describe(self) -> dict[str, object]:
        """What this node tells the cluster of itself (``collab cluster status``)."""
        return {
            "rooms": len(self.rooms),
            "connections": len(self.sockets),
            "port": self.port,
            "healthy": self.cluster is not None and self.cluster.bus.healthy,
            "workers": 0 if self.cluster_jobs is None else self.cluster_jobs.slots(),
        }

    def _open_branches(self) -> set[str]:
        """The branches (``repo/branch``) with documents open here, or being opened: another
        node refuses to delete them (the bus keeps them in a set beside this node's key)."""
        opened = [room.key for room in self.rooms.loaded() if room.attached]
        return {key.partition(":")[0] for key in [*opened, *self.rooms.opening()]}

    async def _health(self, request: web.Request) -> web.Response:
        cluster = None if self.cluster is None else await self.cluster.status()
        store = list(self.store_problems)
        failure = self.store.write_failure if isinstance(self.store, WriteCounts) else None
        if failure is not None:
            store.insert(0, f"writes fail: {failure}")
        return web.json_response(
            {
                "ok": failure is None,
                "rooms": len(self.rooms),
                "connections": len(self.sockets),
                "damaged": dict(self.rooms.damaged),
                "held": self.git.held_files(),
                "store": store,
                **({} if cluster is None else {"cluster": cluster}),
                "degraded": cluster is not None and not cluster["healthy"],
            }
        )

    async def _check_store(self) -> None:
        """At every start, ask SQLite whether the store file is sound (it reads all of it:
        in a thread, beside the serving) and report what it finds: a page damaged while the
        server was stopped, as well as by a crash."""
        if not isinstance(self.store, SQLiteStore):
            return
        try:
            problems = await self.store.check_file()
        except Exception as exc:  # (cancelled at stop: BaseException, passed on)
            problems = [f"the file could not be checked: {exc}"]
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
        quiet_peer_faults()
        # one server (or store repair) per data directory, which a memory store does not use;
        # one server per repositories' directory, whatever its store (it commits to them)
        if self.config.store != "memory":
            self._data_lock.acquire()
        try:
            if self.cluster is None:  # a cluster's nodes share the repositories
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
        for folder, why in await asyncio.to_thread(self.repos.others, names):
            log.warning("%s/%s is %s: not served", self.config.repos, folder, why)
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
        if self._store_check is not None:  # a check still reading the file is interrupted
            self._store_check.cancel()
            await asyncio.gather(self._store_check, return_exceptions=True)
        await self.sockets.close_all(ErrorCode.SHUTTING_DOWN, "server stopping")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.sockets.stop_lingering()
        started, self._services_started = self._services_started, []
        # the cluster's bus after the rooms: a room's last snapshot is bounded by its position
        last = [service for service in started if service is self.cluster]
        for service in reversed([service for service in started if service not in last]):
            await _stop_service(service)
        await self.rooms.close()
        for service in last:
            await _stop_service(service)
        if self._store_started:
            self._store_started = False
            await self.store.stop()
        await asyncio.to_thread(self.repos.close)  # waits for git work still running
        self._repos_lock.release()
        self._data_lock.release()
        if self._started_at is not None:
            log.info("stopped (served for %s)", _duration(time.monotonic() - self._started_at))
            self._started_at = None


async def _stop_service(service: Service) -> None:
    try:
        await service.stop()
    except OSError as exc:
        if exc.filename is None:
            log.exception("stopping %s failed", type(service).__name__)
        else:  # a file it could not write (a permission, a full disk): one line says which
            name = type(service).__name__
            log.error("stopping %s failed: %s: %s", name, exc.strerror or exc, exc.filename)
    except Exception:
        log.exception("stopping %s failed", type(service).__name__)


def _duration(seconds: float) -> str:
    """``seconds`` the way a person reads a running time: 4.2 s, 3 min 20 s, 5 h 02 min."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min {int(seconds % 60):02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"
