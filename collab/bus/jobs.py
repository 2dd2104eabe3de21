"""``ClusterJobs``: completion workers connected to any node serve every node.

Each node says in the key it renews how many job slots its connected ``collab worker``\\ s
have (``workers``). For every other node that has some, a node's pool holds a
``NodeWorkerLink``: a worker like a remote one, whose jobs travel to that node over Redis
pub/sub, in the ``/worker`` protocol's own messages (``collab.completion.wire``). That node
runs them on its own workers, never forwarding them again, and sends the pieces and the
answer back the same way. A node that goes away leaves the jobs it held to the pool, as a
worker that disconnects does: they go to another worker or fail (``UNAVAILABLE``). A node
that does not answer a cancel in time (the message was lost, say) is dropped by the pool and
linked again, with every slot free, at the next refresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError

from collab.bus.keys import DEFAULT_PREFIX, RedisKeys
from collab.bus.nodes import read_nodes
from collab.bus.pubsub import PubSub
from collab.completion import wire
from collab.completion.executor import JobOutput, JobSpec
from collab.completion.pool import LocalWorker, QueuedJob, WorkerPool
from protocol.errors import ErrorCode, ProtocolError

__all__ = ["ClusterJobs", "NodeWorkerLink"]

log = logging.getLogger("collab.bus")

REFRESH_S = 1.0
"""How often the other nodes' worker slots are read again."""


class NodeWorkerLink:
    """The workers of another node, as this node's pool sees them."""

    forwards = True  # the pool never hands it a job another node forwarded here

    def __init__(self, jobs: ClusterJobs, node_id: str, capacity: int) -> None:
        self.jobs = jobs
        self.node_id = node_id
        self.name = f"node {node_id}"
        self.capacity = capacity
        self.running: dict[str, QueuedJob] = {}

    def send(self, job: QueuedJob) -> None:
        self.jobs.publish(self.node_id, wire.Job(job.spec))

    def cancel(self, job_id: str) -> None:
        self.jobs.publish(self.node_id, wire.CancelJob(job_id))

    def close(self, code: ErrorCode, reason: str) -> None:
        """The pool dropped this link: forget it, so that the next refresh links the node
        again (its answers to the jobs sent here find them gone)."""
        if self.jobs.links.get(self.node_id) is self:
            del self.jobs.links[self.node_id]


class ClusterJobs:
    """Forwards completion jobs between the nodes of a cluster (a ``Service``)."""

    def __init__(
        self,
        url: str,
        node_id: str,
        pool: WorkerPool,
        *,
        prefix: str = DEFAULT_PREFIX,
        max_chars: int = 4096,
    ) -> None:
        self.url = url
        self.node_id = node_id
        self.pool = pool
        self.keys = RedisKeys(prefix)
        self.max_chars = max_chars
        self.links: dict[str, NodeWorkerLink] = {}
        self._served: dict[tuple[str, str], QueuedJob] = {}  # (node, job id) -> its job here
        self._client: Redis | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._pubsub = PubSub(
            url,
            self._heard,
            channel=self.channel(node_id),
            name="cluster jobs",
            retry_s=(0.5,),
            lost="a completion message to %s was lost: %s",
            lost_level=logging.WARNING,
        )

    def channel(self, node_id: str) -> str:
        return f"{self.keys.prefix}jobs:{node_id}"

    def slots(self) -> int:
        """The job slots of the workers connected to this node (what it offers the others)."""
        return sum(
            worker.capacity
            for worker in self.pool.workers
            if not isinstance(worker, LocalWorker) and not getattr(worker, "forwards", False)
        )

    async def start(self) -> None:
        self._client = Redis.from_url(self.url)
        await self._pubsub.start()
        self._refresher = asyncio.create_task(self._refresh_loop(), name="cluster workers")

    async def stop(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            await asyncio.gather(self._refresher, return_exceptions=True)
            self._refresher = None
        await self._pubsub.unsubscribe()
        for link in list(self.links.values()):
            self.pool.remove(link, "this node is stopping", quiet=True)
        self.links.clear()
        for job in list(self._served.values()):
            self.pool.cancel(job, ErrorCode.UNAVAILABLE, "the node serving it is stopping")
        await self._pubsub.stop()  # the answers to the jobs failed just now are sent first
        if self._client is not None:
            await self._client.aclose()

    # -- sending ----------------------------------------------------------------------------

    def publish(self, node_id: str, message: wire.WorkerMessage) -> None:
        payload = self.node_id.encode() + b"\0" + wire.encode(message)
        self._pubsub.publish(self.channel(node_id), payload)

    # -- the other nodes' workers -----------------------------------------------------------

    async def _refresh_loop(self) -> None:
        while True:
            try:
                await self.refresh()
            except (RedisError, OSError) as exc:
                log.debug("reading the other nodes' workers failed: %s", exc)
            await asyncio.sleep(REFRESH_S)

    async def refresh(self) -> None:
        """Add, resize or drop the links to other nodes by the slots they offer now."""
        assert self._client is not None
        offered: dict[str, int] = {}
        for node_id, about in (await read_nodes(self._client, self.keys)).items():
            if node_id == self.node_id:
                continue
            with contextlib.suppress(ValueError, TypeError):
                slots = int(about.get("workers", 0))
                if slots > 0:
                    offered[node_id] = slots
        for node_id, link in list(self.links.items()):
            if node_id not in offered:
                del self.links[node_id]
                self.pool.remove(link, "its node has no worker any more, or is gone")
        for node_id, slots in offered.items():
            known = self.links.get(node_id)
            if known is None:
                self.links[node_id] = NodeWorkerLink(self, node_id, slots)
                self.pool.add(self.links[node_id])
            else:
                known.capacity = slots

    # -- receiving --------------------------------------------------------------------------

    def _heard(self, channel: str, data: bytes) -> None:
        """A message on this node's channel: the sending node's id, a NUL, the message."""
        sender, _, body = data.partition(b"\0")
        try:
            self.receive(sender.decode(), wire.decode(body))
        except ProtocolError as exc:
            log.warning("a malformed completion message from a node: %s", exc)

    def receive(self, sender: str, message: wire.WorkerMessage) -> None:
        link = self.links.get(sender)
        match message:
            case wire.Job(spec):
                self._serve(sender, spec)
            case wire.CancelJob(job_id):
                job = self._served.get((sender, job_id))
                if job is not None:
                    self.pool.cancel(job, ErrorCode.CANCELLED, "cancelled by the asking node")
            case wire.Chunk(job_id, piece) if link is not None:
                self.pool.streamed(link, job_id, piece)
            case wire.Done(job_id, output) if link is not None:
                self.pool.finished(link, job_id, _cut(output, self.max_chars))
            case wire.Failed(job_id, code, text) if link is not None:
                self.pool.finished(link, job_id, ProtocolError(code, text))
            case _:
                pass  # an answer from a node this one no longer links to: its job failed

    def _serve(self, sender: str, spec: JobSpec) -> None:
        """Run a job another node forwarded, on this node's own workers."""
        future: asyncio.Future[JobOutput] = asyncio.get_running_loop().create_future()
        job = QueuedJob(spec, future, local_only=True)
        if spec.stream:
            job.on_text = lambda piece: self.publish(sender, wire.Chunk(spec.id, piece))
        self._served[sender, spec.id] = job
        future.add_done_callback(lambda done: self._answer(sender, spec.id, done))
        try:
            self.pool.submit(job)
        except ProtocolError as exc:
            if not future.done():
                future.set_exception(exc)

    def _answer(self, sender: str, job_id: str, done: asyncio.Future[JobOutput]) -> None:
        self._served.pop((sender, job_id), None)
        if done.cancelled():
            self.publish(sender, wire.Failed(job_id, ErrorCode.CANCELLED, "cancelled"))
            return
        exc = done.exception()
        if isinstance(exc, ProtocolError):
            self.publish(sender, wire.Failed(job_id, exc.code, exc.message))
        elif exc is not None:
            self.publish(sender, wire.Failed(job_id, ErrorCode.INTERNAL, str(exc)))
        else:
            self.publish(sender, wire.Done(job_id, done.result()))


def _cut(output: JobOutput, max_chars: int) -> JobOutput:
    if len(output.text) <= max_chars:
        return output
    return dataclasses.replace(output, text=output.text[:max_chars])
