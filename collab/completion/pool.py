"""Dispatching jobs to completion workers: a bounded queue, per-worker slots, cancellation.

A worker is a :class:`WorkerLink`: the embedded one runs jobs in this process
(:class:`LocalWorker`), remote ones are ``/worker`` connections. A job goes to the worker
with the most free slots; one cancelled while it waits is dropped from the queue, one
cancelled while a worker runs it is cancelled there (its slot stays taken until the worker
answers, so a busy GPU is never handed more work than it can hold).

Workers leave and hang. A job whose worker leaves goes back to the front of the queue for
another worker, unless it has already sent text to its requester or has been sent
``REQUEUES`` times before (a job that makes every worker fail is not sent on for ever); else
it fails with UNAVAILABLE. A worker that has not answered a cancel within ``CANCEL_DEADLINE``
seconds is taken for hung: the pool drops it as if it had left and closes its link with
TIMEOUT (a live remote worker connects again, with every slot free). A job that its worker
never answers at all is cancelled by its request's timeout (``completion_timeout``), and so
comes under the same deadline. The embedded worker is never dropped: it could not come back.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from protocol.errors import ErrorCode, ProtocolError

from .backend import Cancelled
from .executor import Executor, JobOutput, JobSpec

__all__ = ["Droppable", "LocalWorker", "QueuedJob", "WorkerLink", "WorkerPool"]

log = logging.getLogger("collab.completion.pool")

REQUEUES = 1
"""How many times a job whose worker left is sent to another worker, at most."""
CANCEL_DEADLINE = 10.0
"""Seconds a worker has to answer a cancel before it is dropped (``WorkerPool.cancel_deadline``)."""


@dataclass(eq=False)
class QueuedJob:
    spec: JobSpec
    future: asyncio.Future[JobOutput]
    queued_at: float = field(default_factory=time.perf_counter)
    sent_at: float | None = None
    worker: WorkerLink | None = None
    cancelled: bool = False
    on_text: Callable[[str], None] | None = None  # pieces of the text, when it streams
    local_only: bool = False  # forwarded by another node: never forwarded again
    sends: int = 0  # times handed to a worker (more than once when a worker left)
    streamed: bool = False  # some of its text reached ``on_text``: it cannot start again

    @property
    def id(self) -> str:
        return self.spec.id


class WorkerLink(Protocol):
    """A worker as the pool sees it. ``running`` is kept by the pool."""

    name: str
    capacity: int
    running: dict[str, QueuedJob]

    def send(self, job: QueuedJob) -> None: ...

    def cancel(self, job_id: str) -> None: ...


@runtime_checkable
class Droppable(Protocol):
    """A worker link the pool may cut, such as a remote worker's connection: one that does not
    answer a cancel within ``cancel_deadline`` is dropped (:meth:`WorkerPool.drop`)."""

    def close(self, code: ErrorCode, reason: str) -> None:
        """End the link; the worker, if alive, may come back as a new one."""
        ...


class WorkerPool:
    def __init__(self, *, max_queue: int = 256) -> None:
        self.max_queue = max_queue
        self.cancel_deadline = CANCEL_DEADLINE
        self.workers: list[WorkerLink] = []
        self.pending: collections.deque[QueuedJob] = collections.deque()
        self._deadlines: dict[QueuedJob, asyncio.TimerHandle] = {}  # cancels not yet answered
        # workers a job of which timed out since they last answered one: picked only when
        # the others are full (a backend that hangs behind a worker that answers cancels)
        self._late: set[WorkerLink] = set()

    @property
    def running(self) -> int:
        return sum(len(w.running) for w in self.workers)

    def add(self, worker: WorkerLink, *, quiet: bool = False) -> None:
        """Dispatch jobs to ``worker`` too; ``quiet``: log it at DEBUG (the embedded worker,
        which comes and goes with the server), else at INFO."""
        self.workers.append(worker)
        log.log(
            logging.DEBUG if quiet else logging.INFO,
            "worker %s joined (capacity %d)",
            worker.name,
            worker.capacity,
        )
        self._dispatch()

    def remove(self, worker: WorkerLink, reason: str, *, quiet: bool = False) -> None:
        """Forget ``worker``. Its jobs go back to the front of the queue, in the order they
        were queued, or fail with UNAVAILABLE (see :meth:`_retry`); waiting jobs that no
        worker left may take fail too. ``quiet``: log it at DEBUG, else as a WARNING."""
        if worker not in self.workers:
            return
        self.workers.remove(worker)
        self._late.discard(worker)
        log.log(
            logging.DEBUG if quiet else logging.WARNING, "worker %s left: %s", worker.name, reason
        )
        jobs = sorted(worker.running.values(), key=lambda job: job.queued_at, reverse=True)
        worker.running.clear()
        for job in jobs:
            self._forget_deadline(job)
            self._retry(job, reason)
        for job in [job for job in self.pending if not _eligible(self.workers, job)]:
            self.pending.remove(job)
            _settle(job, ProtocolError(ErrorCode.UNAVAILABLE, "no completion worker left"))
        self._dispatch()

    def drop(self, worker: WorkerLink, reason: str) -> None:
        """Remove ``worker`` as failed and, where it is :class:`Droppable`, close its link
        with TIMEOUT and ``reason``."""
        self.remove(worker, reason)
        if isinstance(worker, Droppable):
            worker.close(ErrorCode.TIMEOUT, reason)

    def submit(self, job: QueuedJob) -> None:
        """Queue ``job``; raise UNAVAILABLE without workers, RATE_LIMITED when full."""
        if not _eligible(self.workers, job):
            raise ProtocolError(ErrorCode.UNAVAILABLE, "no completion worker is connected")
        if len(self.pending) >= self.max_queue:
            raise ProtocolError(ErrorCode.RATE_LIMITED, "the completion queue is full")
        self.pending.append(job)
        self._dispatch()

    def cancel(self, job: QueuedJob, code: ErrorCode, message: str) -> None:
        """Fail ``job`` with ``code``: a waiting one leaves the queue, a running one is
        cancelled on its worker, which has ``cancel_deadline`` seconds to answer."""
        job.cancelled = True
        _settle(job, ProtocolError(code, message))
        worker = job.worker
        if worker is not None and worker.running.get(job.id) is job:
            if code is ErrorCode.TIMEOUT and worker not in self._late:
                self._late.add(worker)
                log.warning(
                    "%s: a job timed out; other workers take the jobs until it answers one",
                    worker.name,
                )
            worker.cancel(job.id)
            self._await_answer(worker, job)
        else:
            with contextlib.suppress(ValueError):
                self.pending.remove(job)

    def streamed(self, worker: WorkerLink, job_id: str, piece: str) -> None:
        """A piece of job ``job_id``'s text, from ``worker`` while it generates."""
        job = worker.running.get(job_id)
        if job is not None and job.on_text is not None and not job.future.done():
            job.streamed = True
            job.on_text(piece)

    def finished(self, worker: WorkerLink, job_id: str, result: JobOutput | ProtocolError) -> None:
        job = worker.running.pop(job_id, None)
        if job is not None:
            self._forget_deadline(job)
            if not isinstance(result, ProtocolError):
                self._late.discard(worker)  # it answers again
            gave_up = isinstance(result, ProtocolError) and result.code is ErrorCode.CANCELLED
            if gave_up and not job.cancelled:  # the worker cancelled a job on its own
                result = ProtocolError(ErrorCode.UNAVAILABLE, f"{worker.name} gave up the job")
            _settle(job, result)
        self._dispatch()

    def close(self, code: ErrorCode, message: str) -> None:
        for job in [*self.pending, *(j for w in self.workers for j in w.running.values())]:
            self.cancel(job, code, message)
        self.pending.clear()

    def _dispatch(self) -> None:
        while self.pending:
            job = self.pending[0]
            if job.cancelled or job.future.done():
                self.pending.popleft()
                continue
            free = [w for w in _eligible(self.workers, job) if len(w.running) < w.capacity]
            worker = max(
                free, key=lambda w: (w not in self._late, w.capacity - len(w.running)), default=None
            )
            if worker is None:
                return
            self.pending.popleft()
            job.worker = worker
            job.sent_at = time.perf_counter()
            job.sends += 1
            worker.running[job.id] = job
            worker.send(job)

    def _retry(self, job: QueuedJob, reason: str) -> None:
        """Queue again, first, a job whose worker failed for ``reason``; fail it with
        UNAVAILABLE if it cannot start again elsewhere (a cancelled one is let go)."""
        if job.cancelled or job.future.done():
            return
        job.worker, job.sent_at = None, None
        why = self._not_again(job)
        if why is None:
            log.info("job %s goes to another worker (%s)", job.id, reason)
            self.pending.appendleft(job)
            return
        message = f"completion worker failed: {reason}; {why}"
        _settle(job, ProtocolError(ErrorCode.UNAVAILABLE, message))

    def _not_again(self, job: QueuedJob) -> str | None:
        """Why ``job``, whose worker failed, may not be sent to another; ``None`` if it may."""
        if job.streamed:
            return "part of its text was already sent"
        if job.sends > REQUEUES:
            return f"tried on {job.sends} workers"
        if not _eligible(self.workers, job):
            return "no other worker may take it"
        return None

    def _await_answer(self, worker: WorkerLink, job: QueuedJob) -> None:
        """Drop ``worker`` if the cancel of ``job`` is not answered within ``cancel_deadline``
        seconds (a worker that cannot be dropped is left to answer when it can)."""
        if job in self._deadlines or not isinstance(worker, Droppable):
            return
        self._deadlines[job] = asyncio.get_running_loop().call_later(
            self.cancel_deadline, self._unanswered, worker, job
        )

    def _unanswered(self, worker: WorkerLink, job: QueuedJob) -> None:
        self._deadlines.pop(job, None)
        if worker in self.workers and worker.running.get(job.id) is job:
            self.drop(worker, f"did not answer a cancel within {self.cancel_deadline:g} s")

    def _forget_deadline(self, job: QueuedJob) -> None:
        timer = self._deadlines.pop(job, None)
        if timer is not None:
            timer.cancel()


def _eligible(workers: list[WorkerLink], job: QueuedJob) -> list[WorkerLink]:
    """The workers that may take ``job``: a job another node forwarded here stays here
    (the links to other nodes' workers say ``forwards``)."""
    if not job.local_only:
        return workers
    return [worker for worker in workers if not getattr(worker, "forwards", False)]


def _settle(job: QueuedJob, result: JobOutput | ProtocolError) -> None:
    if job.future.done():
        return
    if isinstance(result, ProtocolError):
        job.future.set_exception(result)
        # a job given up (timed out, superseded) has nobody awaiting it any more: marked as
        # retrieved, so that asyncio does not log it as never retrieved; awaiting it raises
        job.future.exception()
    else:
        job.future.set_result(result)


class LocalWorker:
    """The embedded worker: runs jobs on a backend inside the engine's process."""

    def __init__(self, pool: WorkerPool, executor: Executor, *, name: str = "embedded") -> None:
        self.pool = pool
        self.executor = executor
        self.name = name
        self.capacity = max(1, executor.backend.capacity)
        self.running: dict[str, QueuedJob] = {}
        self._flags: dict[str, threading.Event] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def send(self, job: QueuedJob) -> None:
        flag = self._flags[job.id] = threading.Event()
        task = asyncio.create_task(self._run(job.spec, flag), name=f"completion {job.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def cancel(self, job_id: str) -> None:
        flag = self._flags.get(job_id)
        if flag is not None:
            flag.set()

    async def _run(self, spec: JobSpec, flag: threading.Event) -> None:
        result: JobOutput | ProtocolError

        def emit(piece: str) -> None:
            self.pool.streamed(self, spec.id, piece)

        try:
            result = await self.executor.run(spec, flag, emit if spec.stream else None)
        except Cancelled:
            result = ProtocolError(ErrorCode.CANCELLED, "cancelled")
        except asyncio.CancelledError:
            flag.set()
            raise
        except Exception as exc:
            log.exception("completion backend failed")
            result = ProtocolError(ErrorCode.UNAVAILABLE, f"completion backend failed: {exc}")
        finally:
            self._flags.pop(spec.id, None)
        self.pool.finished(self, spec.id, result)

    async def stop(self) -> None:
        for flag in self._flags.values():
            flag.set()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
