"""``GET /metrics``: the server's figures in the Prometheus text format (``prometheus-client``).

Each :class:`~collab.server.app.CollabServer` has a registry of its own (never the library's
global one): several servers in one process report apart. Most series are read when the
endpoint is scraped, from what the server counts anyway (loaded rooms, the endpoints'
:class:`~collab.live.traffic.Traffic`, the open send queues, the store's counters, the completion
figures); the latency histograms are observed where the work is done (the store's writer and
syncer threads, the git commit and merge paths). README.md ("Operating") lists every series.

Who may read it: a caller on loopback, or anyone with a token of the ``metrics`` role
(``collab token --role metrics --user prometheus``), sent as ``Authorization: Bearer``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol, runtime_checkable

from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from protocol.errors import ErrorCode

from ..completion.metrics import PARTS, percentile
from ..completion.service import CompletionService
from ..git.branch_sync import GitSync
from ..git.merges import Merges
from ..live.rooms import Rooms
from ..live.traffic import Traffic
from ..store.base import Store, WriteCounts
from ..store.sqlite_store import SQLiteStore
from .auth import Authenticator, AuthError, Role, bearer_token, is_loopback
from .http_api import json_error

__all__ = ["ClusterFigures", "ServerMetrics", "authorize_metrics"]

_FAST = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
"""Buckets (s) for store writes and fsyncs: well under a millisecond on a good disk."""
_SLOW = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Buckets (s) for git commits and merges."""
_QUANTILES = (0.5, 0.9, 0.99)
_SOCKET_ENDPOINTS = ("ws", "yjs", "worker")


def authorize_metrics(auth: Authenticator, *, token: str | None, remote: str | None) -> None:
    """Let a scrape through, or raise ``AuthError``: a caller on loopback may always read;
    another needs a token of the ``metrics`` role (UNAUTHORIZED without a valid token,
    FORBIDDEN with a token of another role)."""
    if is_loopback(remote):
        return
    if not token or auth.dev_mode:
        raise AuthError(ErrorCode.UNAUTHORIZED, "a metrics token is required")
    identity = auth.authenticate(token=token, user=None, remote=remote)
    if identity.role is not Role.METRICS:
        raise AuthError(ErrorCode.FORBIDDEN, "a token of the metrics role is required")


class ClusterFigures(Protocol):
    """What the metrics read of a node of a cluster (``collab.bus.cluster.Cluster``)."""

    @property
    def degraded(self) -> bool: ...

    @property
    def feed_behind(self) -> int | None: ...

    @property
    def redis_seconds(self) -> float | None: ...

    @property
    def nodes_alive(self) -> int | None: ...


@runtime_checkable
class _TimedWrites(Protocol):
    """A store that times its writes (SQLite's transactions, Redis's round trips)."""

    observe_write: Callable[[float], None] | None


class ServerMetrics:
    """One server's registry, counters and histograms, and its ``GET /metrics`` handler.

    The store's series are those its store has (none for the memory store; the fsyncs and
    transactions of SQLite's log only for SQLite); a node of a cluster adds the cluster's."""

    def __init__(
        self,
        *,
        auth: Authenticator,
        rooms: Rooms,
        store: Store,
        git: GitSync,
        merges: Merges,
        completion: CompletionService,
        ws: Traffic,
        yjs: Traffic,
        worker: Traffic,
        api: Traffic,
        cluster: ClusterFigures | None = None,
    ) -> None:
        self.auth = auth
        self.rooms = rooms
        self.store = store
        self.cluster = cluster
        self.completion = completion
        self.ws = ws
        self.yjs = yjs
        self.worker = worker
        self.api = api  # POST /api/<op> and GET /metrics: refusals only
        self.registry = CollectorRegistry()
        registry = self.registry
        self.commit = Histogram(
            "collab_git_commit_seconds",
            "Time each continuous commit of live documents took to write to git.",
            buckets=_SLOW,
            registry=registry,
        )
        self.merge = Histogram(
            "collab_merge_seconds",
            "Time each applied merge took, from the call to the merge commit.",
            buckets=_SLOW,
            registry=registry,
        )
        registry.register(_ServerCollector(self))
        ProcessCollector(registry=registry)
        # the parts time themselves through these hooks (None: not timed)
        if isinstance(store, _TimedWrites):
            store_write = Histogram(
                "collab_store_write_seconds",
                "Time the store took to write each batch of writes (SQLite: a transaction; "
                "Redis: a pipeline, until Redis answered it).",
                buckets=_FAST,
                registry=registry,
            )
            store.observe_write = store_write.observe
        if isinstance(store, SQLiteStore):
            store_fsync = Histogram(
                "collab_store_fsync_seconds",
                "Time each fdatasync of the store's write-ahead log took.",
                buckets=_FAST,
                registry=registry,
            )
            store.observe_sync = store_fsync.observe
        git.observe_commit = self.commit.observe
        merges.observe_merge = self.merge.observe

    @property
    def traffic(self) -> tuple[Traffic, ...]:
        return (self.ws, self.yjs, self.worker, self.api)

    async def handle(self, request: web.Request) -> web.Response:
        """``GET /metrics``."""
        token = bearer_token(request.headers.get("Authorization", "")) or request.query.get("token")
        try:
            authorize_metrics(self.auth, token=token, remote=request.remote)
        except AuthError as exc:
            self.api.refuse("error", exc.code)
            return json_error(exc)
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encoder(self.registry), headers={"Content-Type": content_type})


class _ServerCollector(Collector):
    """The series read at scrape time."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        rooms = self.metrics.rooms
        yield GaugeMetricFamily("collab_rooms_loaded", "Live documents loaded.", len(rooms))
        yield GaugeMetricFamily(
            "collab_rooms_damaged",
            "Documents quarantined because their stored history is damaged.",
            len(rooms.damaged),
        )
        yield CounterMetricFamily(
            "collab_rooms_history_lost",
            "Documents loaded whose stored history lacked edits their branch had committed "
            "(their commits are held).",
            rooms.history_lost,
        )
        yield from self._connections()
        yield from self._traffic()
        yield from self._store()
        if self.metrics.cluster is not None:
            yield from _cluster(self.metrics.cluster)
        yield from _completion(self.metrics.completion)

    def _connections(self) -> Iterator[Metric]:
        labels = ["endpoint"]
        connections = GaugeMetricFamily(
            "collab_connections", "Open connections (past their handshake).", labels=labels
        )
        frames = GaugeMetricFamily(
            "collab_send_queue_frames", "Frames queued to send, all connections.", labels=labels
        )
        queued = GaugeMetricFamily(
            "collab_send_queue_bytes", "Bytes queued to send, all connections.", labels=labels
        )
        most_frames = GaugeMetricFamily(
            "collab_send_queue_max_frames",
            "Frames queued for the most behind connection.",
            labels=labels,
        )
        most_bytes = GaugeMetricFamily(
            "collab_send_queue_max_bytes",
            "Bytes queued for the most behind connection.",
            labels=labels,
        )
        for traffic in self.metrics.traffic:
            if traffic.endpoint not in _SOCKET_ENDPOINTS:
                continue
            depths = [(outbox.queued, outbox.queued_bytes) for outbox in traffic.open]
            name = [traffic.endpoint]
            connections.add_metric(name, len(depths))
            frames.add_metric(name, sum(d[0] for d in depths))
            queued.add_metric(name, sum(d[1] for d in depths))
            most_frames.add_metric(name, max((d[0] for d in depths), default=0))
            most_bytes.add_metric(name, max((d[1] for d in depths), default=0))
        yield from (connections, frames, queued, most_frames, most_bytes)

    def _traffic(self) -> Iterator[Metric]:
        labels = ["endpoint"]
        updates_in = CounterMetricFamily(
            "collab_updates_received", "CRDT updates accepted from peers.", labels=labels
        )
        updates_out = CounterMetricFamily(
            "collab_updates_sent", "CRDT updates sent to peers.", labels=labels
        )
        bytes_in = CounterMetricFamily(
            "collab_received_bytes", "Bytes of WebSocket messages received.", labels=labels
        )
        bytes_out = CounterMetricFamily(
            "collab_sent_bytes", "Bytes of WebSocket frames sent.", labels=labels
        )
        refusals = CounterMetricFamily(
            "collab_refusals",
            "Connections closed with an error code (kind=close) and errors answered to a "
            "message, call or request (kind=error).",
            labels=["endpoint", "kind", "code", "name"],
        )
        for traffic in self.metrics.traffic:
            name = [traffic.endpoint]
            if traffic.endpoint in _SOCKET_ENDPOINTS:
                updates_in.add_metric(name, traffic.updates_in)
                updates_out.add_metric(name, traffic.updates_out)
                bytes_in.add_metric(name, traffic.bytes_in)
                bytes_out.add_metric(name, traffic.bytes_out)
            for (kind, code), count in sorted(traffic.refusals.items()):
                refusals.add_metric([traffic.endpoint, kind, str(code), _code_name(code)], count)
        yield from (updates_in, updates_out, bytes_in, bytes_out, refusals)

    def _store(self) -> Iterator[Metric]:
        store = self.metrics.store
        if isinstance(store, WriteCounts):  # SQLite and Redis alike
            yield CounterMetricFamily(
                "collab_store_appends", "Updates written to the store.", store.appended
            )
            yield CounterMetricFamily(
                "collab_store_write_errors",
                "Writes to the store that failed (a full disk, a file made read-only, a Redis "
                "out of memory or out of reach past the outage limit, ...).",
                store.write_errors,
            )
            yield GaugeMetricFamily(
                "collab_store_writes_failing",
                "1 while writes to the store fail (from a failed write to the next that succeeds).",
                int(store.write_failure is not None),
            )
        if isinstance(store, SQLiteStore):
            yield CounterMetricFamily(
                "collab_store_commits", "Write transactions the store committed.", store.commits
            )
            yield CounterMetricFamily(
                "collab_store_fsyncs", "fdatasyncs of the store's write-ahead log.", store.syncs
            )


def _cluster(cluster: ClusterFigures) -> Iterator[Metric]:
    """The series of a node of a cluster (``collab serve --redis``)."""
    yield GaugeMetricFamily(
        "collab_cluster_degraded",
        "1 while this node is cut off from the cluster (Redis does not answer it, or its "
        "key lapsed): degraded in /healthz.",
        int(cluster.degraded),
    )
    behind = cluster.feed_behind
    if behind is not None:
        yield GaugeMetricFamily(
            "collab_cluster_feed_behind",
            "Entries of the cluster's feed (every node's appends) this node had not read "
            "yet, at its last heartbeat.",
            behind,
        )
    seconds = cluster.redis_seconds
    if seconds is not None:
        yield GaugeMetricFamily(
            "collab_cluster_redis_seconds",
            "Round trip of this node's last heartbeat to Redis.",
            seconds,
        )
    alive = cluster.nodes_alive
    if alive is not None:
        yield GaugeMetricFamily(
            "collab_cluster_nodes", "Nodes alive in the cluster, at the last look.", alive
        )


_AMOUNTS = {  # completion figures that count an amount, not events: a counter each
    "accepted_chars": "Characters of accepted completions.",
    "prompt_tokens": "Tokens of the prompts sent to models (where the backend counts them).",
    "reused_tokens": "Prompt tokens a model server had cached from an earlier prompt.",
}


def _completion(service: CompletionService) -> Iterator[Metric]:
    figures = service.metrics
    events = CounterMetricFamily(
        "collab_completion_events",
        "Completion requests and what became of them (requests, answered, shown, accepted, "
        "cached, superseded, cancelled, ...).",
        labels=["event"],
    )
    for event, count in sorted(figures.counts.items()):
        if event not in _AMOUNTS:
            events.add_metric([event], count)
    yield events
    for name, documentation in _AMOUNTS.items():
        yield CounterMetricFamily(f"collab_completion_{name}", documentation, figures.counts[name])
    errors = CounterMetricFamily(
        "collab_completion_errors", "Completion requests that failed.", labels=["code"]
    )
    for code, count in sorted(figures.errors.items()):
        errors.add_metric([code], count)
    yield errors
    shown = figures.counts["shown"]
    if shown:
        yield GaugeMetricFamily(
            "collab_completion_acceptance_ratio",
            "Completions accepted per completion shown (with text).",
            figures.counts["accepted"] / shown,
        )
    latency = Metric(
        "collab_completion_latency_seconds",
        "Completion latency by part; quantiles over the last 4096 answered requests.",
        "summary",
    )
    answered = figures.counts["answered"]
    for part in PARTS:
        values = list(figures.latency[part])
        for q in _QUANTILES:
            sample = {"part": part, "quantile": str(q)}
            latency.add_sample(latency.name, sample, percentile(values, q) / 1000)
        latency.add_sample(latency.name + "_count", {"part": part}, answered)
        latency.add_sample(latency.name + "_sum", {"part": part}, figures.latency_sum[part] / 1000)
    yield latency
    workers = service.pool.workers
    yield GaugeMetricFamily("collab_completion_workers", "Completion workers.", len(workers))
    yield GaugeMetricFamily(
        "collab_completion_capacity",
        "Jobs the completion workers may run at once.",
        sum(w.capacity for w in workers),
    )
    yield GaugeMetricFamily(
        "collab_completion_running",
        "Completion jobs running.",
        sum(len(w.running) for w in workers),
    )
    yield GaugeMetricFamily(
        "collab_completion_queued", "Completion jobs waiting.", len(service.pool.pending)
    )


def _code_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return "WEBSOCKET"  # a WebSocket close code (aiohttp's, for a bad frame)
