"""Workers that leave or hang: a job that has sent nothing yet goes to another worker (a few
times at most), and a worker that does not answer a cancel in time is dropped.

The workers here are real ``/worker`` connections that the test drives: they take jobs and
answer, stream, hang or leave only when told."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from fake_backends import FakeBackend
from gitcli import until

from collab import Client, ClientError, CollabServer
from collab.bus.jobs import ClusterJobs, NodeWorkerLink
from collab.completion import Generated, Prompt, pool, wire
from collab.completion.executor import JobOutput, JobSpec
from collab.completion.pool import QueuedJob, WorkerPool
from collab.completion.prompts import Family, PromptParts
from collab.completion.worker import RemoteWorker, WorkerRefused
from protocol.errors import ErrorCode

APP = "demo/main:src/app.py"
UTIL = "demo/main:src/util.py"


class ScriptedWorker:
    """A ``/worker`` connection that records what the engine sends and does what it is told."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.jobs: list[JobSpec] = []
        self.cancels: list[str] = []
        self.close_code: int | None = None
        self.close_reason = ""
        self.closed = asyncio.Event()

    async def read(self) -> None:
        """Take the engine's messages until it closes (pings are answered meanwhile)."""
        while True:
            msg = await self.ws.receive()
            if msg.type is aiohttp.WSMsgType.BINARY:
                match wire.decode(msg.data):
                    case wire.Job(spec):
                        self.jobs.append(spec)
                    case wire.CancelJob(job_id):
                        self.cancels.append(job_id)
                continue
            if msg.type is aiohttp.WSMsgType.CLOSE:
                self.close_code, self.close_reason = msg.data, msg.extra or ""
            if msg.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.ERROR,
            ):
                self.closed.set()
                return

    async def answer(self, job: JobSpec, text: str) -> None:
        output = JobOutput(text, 0.0, 0.0, 1.0, 1, "scripted")
        await self.ws.send_bytes(wire.encode(wire.Done(job.id, output)))

    async def stream(self, job: JobSpec, piece: str) -> None:
        await self.ws.send_bytes(wire.encode(wire.Chunk(job.id, piece)))

    async def leave(self) -> None:
        await self.ws.close()
        self.closed.set()


@contextlib.asynccontextmanager
async def scripted_worker(
    server: CollabServer, name: str, *, capacity: int = 1
) -> AsyncIterator[ScriptedWorker]:
    """A worker named ``name`` connected to ``server``, in the pool once this yields."""
    joined = len(server.completion.pool.workers)
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{server.url}/worker?user={name}") as ws,
    ):
        hello = wire.WorkerHello(name, "scripted", str(Family.PLAIN), capacity)
        await ws.send_bytes(wire.encode(hello))
        welcome = await ws.receive(timeout=10)
        assert isinstance(wire.decode(welcome.data), wire.WorkerWelcome)
        worker = ScriptedWorker(ws)
        reader = asyncio.create_task(worker.read())
        try:
            await until(lambda: len(server.completion.pool.workers) > joined)
            yield worker
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)


def names(server: CollabServer) -> list[str]:
    return [worker.name.split(" ")[0] for worker in server.completion.pool.workers]


async def test_a_job_of_a_worker_that_leaves_goes_to_another_worker_first(
    make_server: Any,
) -> None:
    """Alice's job was taken by a worker that leaves: it goes to the remaining worker before
    carol's job, which was queued after it, and keeps the time it has waited."""
    async with (
        make_server(None) as server,
        Client(server.url, user="alice") as a,
        Client(server.url, user="bob") as b,
        Client(server.url, user="carol") as c,
        scripted_worker(server, "leaving") as leaving,
    ):
        await a.open(APP)
        asking = asyncio.create_task(a.complete(APP, 3))
        await until(lambda: len(leaving.jobs) == 1)
        async with scripted_worker(server, "staying") as staying:
            await b.open(APP)
            busy = asyncio.create_task(b.complete(APP, 4))
            await until(lambda: len(staying.jobs) == 1)
            await c.open(UTIL)
            queued = asyncio.create_task(c.complete(UTIL, 3))
            await until(lambda: len(server.completion.pool.pending) == 1)
            await asyncio.sleep(0.2)
            await leaving.leave()
            await until(lambda: names(server) == ["staying"])
            await staying.answer(staying.jobs[0], "BOB")
            await until(lambda: len(staying.jobs) == 2)
            assert staying.jobs[1].id == leaving.jobs[0].id  # at the front of the queue
            await staying.answer(staying.jobs[1], "ALICE")
            reply = await asking
            assert reply["text"] == "ALICE"
            assert reply["latency"]["queue_ms"] >= 200  # counted from its first queueing
            assert (await busy)["text"] == "BOB"
            await until(lambda: len(staying.jobs) == 3)
            await staying.answer(staying.jobs[2], "CAROL")
            assert (await queued)["text"] == "CAROL"
            assert server.completion.pool.running == 0


async def test_a_job_that_already_streamed_text_fails_with_its_worker(make_server: Any) -> None:
    """Text already shown cannot be taken back: the job is not sent again."""
    async with (
        make_server(None) as server,
        Client(server.url, user="alice") as a,
        scripted_worker(server, "leaving") as leaving,
        scripted_worker(server, "idle") as idle,
    ):
        await a.open(APP)
        asking = asyncio.create_task(a.call("complete", doc=APP, index=3, stream=1))
        await until(lambda: len(leaving.jobs + idle.jobs) == 1)
        first, other = (leaving, idle) if leaving.jobs else (idle, leaving)
        await first.stream(first.jobs[0], "ret")
        event = await asyncio.wait_for(a.events.get(), 10)
        assert event.data["text"] == "ret"
        await first.leave()
        with pytest.raises(ClientError) as err:
            await asking
        assert err.value.code == ErrorCode.UNAVAILABLE
        assert "already sent" in err.value.message
        await asyncio.sleep(0.1)
        assert not other.jobs
        assert server.completion.pool.running == 0


async def test_a_job_that_makes_every_worker_leave_is_not_sent_on_for_ever(
    make_server: Any,
) -> None:
    """A job is sent again at most ``pool.REQUEUES`` times, though workers remain."""
    tries = pool.REQUEUES + 1
    async with make_server(None) as server, Client(server.url, user="alice") as a:
        await a.open(APP)
        async with contextlib.AsyncExitStack() as stack:
            workers = [
                await stack.enter_async_context(scripted_worker(server, f"w{n}"))
                for n in range(tries + 1)
            ]
            asking = asyncio.create_task(a.complete(APP, 3))

            def taker() -> ScriptedWorker | None:
                """The worker that holds the job now, if any."""
                return next((w for w in workers if w.jobs and not w.closed.is_set()), None)

            for _ in range(tries):  # each worker that gets the job leaves
                await until(lambda: taker() is not None)
                holder = taker()
                assert holder is not None
                await holder.leave()
            with pytest.raises(ClientError) as err:
                await asking
            assert err.value.code == ErrorCode.UNAVAILABLE
            assert f"tried on {tries} workers" in err.value.message
            assert sum(len(w.jobs) for w in workers) == tries
            assert len(server.completion.pool.workers) == 1  # one worker never got it
            assert server.completion.pool.running == 0


async def test_a_worker_that_does_not_answer_a_cancel_is_dropped(make_server: Any) -> None:
    """Its connection is closed with 4504 and its other job goes to another worker."""
    async with (
        make_server(None) as server,
        Client(server.url, user="alice") as a,
        Client(server.url, user="bob") as b,
        scripted_worker(server, "hung", capacity=2) as hung,
    ):
        server.completion.pool.cancel_deadline = 1.0
        await a.open(APP)
        await b.open(APP)
        cancelled = asyncio.create_task(a.complete(APP, 3))
        moved = asyncio.create_task(b.complete(APP, 4))
        await until(lambda: len(hung.jobs) == 2)
        async with scripted_worker(server, "healthy") as healthy:
            await a.call("complete.cancel", doc=APP)
            with pytest.raises(ClientError) as err:
                await cancelled
            assert err.value.code == ErrorCode.CANCELLED
            await until(lambda: len(hung.cancels) == 1)
            assert server.completion.pool.running == 2  # the slot waits for the answer ...
            await asyncio.wait_for(hung.closed.wait(), 5)  # ... for 1 s
            assert hung.close_code == ErrorCode.TIMEOUT
            assert "did not answer a cancel within 1 s" in hung.close_reason
            assert names(server) == ["healthy"]
            await until(lambda: len(healthy.jobs) == 1)
            await healthy.answer(healthy.jobs[0], "MOVED")
            assert (await moved)["text"] == "MOVED"
            assert server.completion.pool.running == 0


async def test_a_job_a_worker_never_answers_times_out_and_frees_its_slot(
    make_server: Any,
) -> None:
    """The request's timeout cancels the job; the cancel goes unanswered too: the worker is
    dropped, and nothing stays counted as running."""
    async with (
        make_server(None, completion_timeout=0.3) as server,
        Client(server.url, user="alice") as a,
        scripted_worker(server, "hung") as hung,
    ):
        server.completion.pool.cancel_deadline = 0.3
        await a.open(APP)
        with pytest.raises(ClientError) as err:
            await a.complete(APP, 3)
        assert err.value.code == ErrorCode.TIMEOUT
        await until(lambda: hung.cancels == [hung.jobs[0].id])
        await asyncio.wait_for(hung.closed.wait(), 5)
        assert hung.close_code == ErrorCode.TIMEOUT
        assert server.completion.pool.workers == []
        assert server.completion.pool.running == 0
        async with scripted_worker(server, "fresh") as fresh:
            asking = asyncio.create_task(a.complete(APP, 4))
            await until(lambda: len(fresh.jobs) == 1)
            await fresh.answer(fresh.jobs[0], "FRESH")
            assert (await asking)["text"] == "FRESH"


async def test_a_worker_that_answers_its_cancel_in_time_stays(make_server: Any) -> None:
    async with (
        make_server(None) as server,
        Client(server.url, user="alice") as a,
        scripted_worker(server, "slow") as slow,
    ):
        server.completion.pool.cancel_deadline = 1.0
        await a.open(APP)
        asking = asyncio.create_task(a.complete(APP, 3))
        await until(lambda: len(slow.jobs) == 1)
        await a.call("complete.cancel", doc=APP)
        with pytest.raises(ClientError):
            await asking
        await until(lambda: len(slow.cancels) == 1)
        failed = wire.Failed(slow.jobs[0].id, ErrorCode.CANCELLED, "cancelled")
        await slow.ws.send_bytes(wire.encode(failed))
        await until(lambda: server.completion.pool.running == 0)
        await asyncio.sleep(1.2)  # past the deadline
        assert not slow.closed.is_set() and names(server) == ["slow"]


async def test_another_node_that_does_not_answer_a_cancel_is_linked_again() -> None:
    """A cancel to another node's workers was lost (here: the bus was never started): the
    link is dropped once the deadline passes, and forgotten: the next refresh links it again."""
    workers = WorkerPool()
    workers.cancel_deadline = 0.1
    jobs = ClusterJobs("redis://127.0.0.1:1", "here", workers)
    link = jobs.links["there"] = NodeWorkerLink(jobs, "there", 1)
    workers.add(link)
    spec = JobSpec("j1", PromptParts("demo", "a.py", "x = ", ""), 8, True)
    job = QueuedJob(spec, asyncio.get_running_loop().create_future())
    workers.submit(job)
    assert link.running == {"j1": job}
    workers.cancel(job, ErrorCode.TIMEOUT, "timed out")
    assert workers.running == 1  # the slot waits for the node's answer ...
    await until(lambda: not workers.workers)  # ... until the deadline
    assert jobs.links == {} and workers.running == 0


class StuckBackend(FakeBackend):
    """A backend whose generation never ends, cancelled or not (a hung GPU, say)."""

    async def complete(self, prompt: Prompt, cancel: threading.Event) -> Generated:
        self.prompts.append(prompt)
        self.started.set()
        await asyncio.Event().wait()
        raise AssertionError("never")


async def test_a_collab_worker_with_a_stuck_backend_is_dropped_and_connects_again(
    make_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        make_server(None, completion_timeout=0.3) as server,
        Client(server.url, user="alice") as a,
    ):
        server.completion.pool.cancel_deadline = 0.3
        worker = RemoteWorker(server.url, StuckBackend(capacity=1), user="gpu1", name="stuck")
        stop = asyncio.Event()
        running = asyncio.create_task(worker.run(stop))
        try:
            await until(lambda: names(server) == ["stuck"])
            first = server.completion.pool.workers[0]
            await a.open(APP)
            with pytest.raises(ClientError) as err:
                await a.complete(APP, 3)
            assert err.value.code == ErrorCode.TIMEOUT
            # dropped after the deadline; it connects again with its slot free
            await until(
                lambda: (
                    names(server) == ["stuck"] and server.completion.pool.workers[0] is not first
                )
            )
            assert server.completion.pool.running == 0
            assert "did not answer a cancel in time" in caplog.text
        finally:
            stop.set()
            await running


async def test_a_worker_whose_hello_the_engine_refuses_stops_rather_than_retry(
    make_server: Any,
) -> None:
    """A worker the engine refuses for what it says of itself (a capacity out of range,
    from a program that embeds the worker) gets the engine's reason and stops: the same
    hello would be refused again, for ever."""
    async with make_server(None) as server:
        worker = RemoteWorker(
            server.url, FakeBackend("x", capacity=5000), user="gpu1", min_backoff=0.01
        )
        with pytest.raises(WorkerRefused) as refused:
            await asyncio.wait_for(worker.run(), 10)
        assert "capacity must be 1 to 1024" in str(refused.value)
        assert not server.completion.pool.workers


async def test_a_worker_whose_job_timed_out_gets_jobs_only_when_the_others_are_full(
    make_server: Any,
) -> None:
    """A worker whose backend answers nothing (a model server that hangs behind a worker
    that answers cancels at once) stays connected; after one of its jobs timed out, the
    next jobs go to the other worker, though it has the most free slots, until it answers
    a job again (it was picked again and again: one request in a few timed out for good)."""
    async with (
        make_server(None, completion_timeout=0.3) as server,
        Client(server.url, user="alice") as a,
        scripted_worker(server, "hung", capacity=2) as hung,
        scripted_worker(server, "good", capacity=1) as good,
    ):
        await a.open(APP)
        with pytest.raises(ClientError) as err:
            await a.complete(APP, 3)  # to hung: it has the most free slots
        assert err.value.code == ErrorCode.TIMEOUT
        assert len(hung.jobs) == 1 and hung.cancels == [hung.jobs[0].id]
        failed = wire.Failed(hung.jobs[0].id, ErrorCode.CANCELLED, "cancelled")
        await hung.ws.send_bytes(wire.encode(failed))  # it answers its cancel in time
        await until(lambda: server.completion.pool.running == 0)
        for n in range(3):
            asking = asyncio.create_task(a.complete(APP, 3 + n))
            await until(lambda n=n: len(good.jobs) == n + 1)  # type: ignore[misc]
            await good.answer(good.jobs[n], f"GOOD{n}")
            assert (await asking)["text"] == f"GOOD{n}"
        assert len(hung.jobs) == 1
        assert names(server) == ["hung", "good"]


class UnsendableBackend(FakeBackend):
    """Answers what a model server may send that msgpack cannot carry as it is: a lone
    surrogate (a JSON ``\\ud800``) and token counts of 10**20."""

    async def complete(self, prompt: Prompt, cancel: threading.Event) -> Generated:
        self.prompts.append(prompt)
        return Generated("a\ud800b", 10**20, 10**20, 10**19)


async def test_a_workers_answer_msgpack_cannot_carry_as_it_is_still_answers(
    make_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The text is made valid and the counts bounded, so the answer reaches the client at
    once (the worker sent nothing before: its job hung until the timeout and the worker was
    dropped) and the figures stay readable; an answer that still cannot be encoded is
    answered as a failure, and the worker stays."""
    async with (
        make_server(None, completion_timeout=5.0) as server,
        Client(server.url, user="alice") as a,
    ):
        worker = RemoteWorker(server.url, UnsendableBackend(), user="gpu1", name="odd")
        stop = asyncio.Event()
        running = asyncio.create_task(worker.run(stop))
        try:
            await until(lambda: names(server) == ["odd"])
            joined = server.completion.pool.workers[0]
            await a.open(APP)
            reply = await asyncio.wait_for(a.complete(APP, 3), 3)
            assert reply["text"] == "a\ufffdb"
            metrics = await a.call("complete.metrics")
            assert metrics["counts"]["answered"] == 1
            encode = wire.encode

            def refuse_answers(message: wire.WorkerMessage) -> bytes:
                if isinstance(message, wire.Done):
                    raise ValueError("cannot encode")
                return encode(message)

            monkeypatch.setattr(wire, "encode", refuse_answers)
            with pytest.raises(ClientError) as err:
                await asyncio.wait_for(a.complete(APP, 4), 3)
            assert err.value.code == ErrorCode.UNAVAILABLE
            assert server.completion.pool.workers == [joined]
        finally:
            stop.set()
            await running
