"""Completion pipeline benchmark: what the engine adds around the model.

A server runs in a child process with a backend that answers instantly; N simulated typists
(one connection and one document each, all on one branch) type a character and ask for a
completion at the cursor every P ms, for D seconds. Reports the p50/p99 of

- server: the reply's ``total_ms`` minus its ``model_ms`` (reading the live document, other
  files as context, the cache, the queue, the worker, the anchor), and
- client: the round trip the typist sees minus ``model_ms`` (adds the socket and msgpack),

with the goal p50 < 5 ms and p99 < 15 ms. A request that fails counts as infinitely slow:
it stays in the percentiles (a percentile that lands on one reads ``inf``), and the errors are
counted beside them; the percentiles over the answered requests alone (how this benchmark
reported before) are printed too.

The server runs as ``collab serve`` runs it, on uvloop (``--server-loop asyncio``: asyncio's
own loop, as this benchmark ran it before). The typists all share this process's event loop
(asyncio's own; ``--client-loop uvloop`` for uvloop): a ticker task measures that loop's lag
over the measured window, with the process's CPU, and the run says when the client, not the
server, is the bottleneck (the client figures then include the client's own queueing).
Not a pass/fail test.

Usage: .venv/bin/python tests/bench/completion_pipeline.py [--typists 100 --period 0.3
       --duration 20] [--server-loop uvloop|asyncio] [--client-loop asyncio|uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from collab import Client, CollabServer, ServerConfig  # noqa: E402
from collab.completion import Family, Generated, Prompt  # noqa: E402
from collab.completion.metrics import percentile  # noqa: E402
from gitsync import create_demo_repo  # noqa: E402

SOURCE = "import os\n\n\ndef handler(request):\n    value = request.get('value')\n"


class InstantBackend:
    """Answers at once: the figures measure everything but the model."""

    name = "instant"
    family = Family.PLAIN
    capacity = 64

    def count_tokens(self, text: str) -> int:
        return len(text) // 3

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def complete(self, prompt: Prompt, cancel: threading.Event) -> Generated:
        return Generated("return value", 2)


async def serve(port: int, data: Path) -> None:
    repos = data / "repos"
    if not repos.exists():
        create_demo_repo(repos / "bench", {"src/base.py": SOURCE})
    config = ServerConfig(
        repos=repos,
        data_dir=data / "store",
        port=port,
        completion_backend="none",
        completion_rate=0.0,
    )
    server = CollabServer(config)
    server.completion.backend = InstantBackend()
    async with server:
        print("ready", flush=True)
        await asyncio.Event().wait()


def run_on(loop: str, main: Coroutine[Any, Any, Any]) -> Any:
    """Run ``main`` on uvloop (as ``collab serve`` does) or on asyncio's own loop."""
    if loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    return asyncio.run(main)


# Past these the client process (all typists on one event loop) is the bottleneck.
CLIENT_LAG_LIMIT_MS = 5.0
CLIENT_CPU_LIMIT = 85.0
TICK = 0.005


async def ticker(lags: list[float], stop: asyncio.Event) -> None:
    """How late this loop wakes a task that sleeps ``TICK`` (ms), until ``stop``."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        due = loop.time() + TICK
        await asyncio.sleep(TICK)
        lags.append(max(0.0, loop.time() - due) * 1000)


async def typist(
    url: str, number: int, period: float, until: float, warmup: float, out: dict[str, Any]
) -> None:
    async with Client(url, user=f"typist{number}") as client:
        doc = await client.open(f"bench/main:src/t{number}.py")
        doc.insert(0, SOURCE)
        await client.flush()
        await asyncio.sleep(random.random() * period)
        next_at = time.perf_counter()
        while time.perf_counter() < until:
            doc.insert(len(str(doc)), random.choice("abcdefgh()= \n"))
            cursor = len(str(doc))
            started = time.perf_counter()
            try:
                reply = await client.complete(doc, cursor)
            except Exception as exc:
                out["errors"].append(repr(exc))
                if started >= warmup:
                    out["measured_errors"] += 1
            else:
                rtt = (time.perf_counter() - started) * 1000
                if started >= warmup:
                    latency = reply["latency"]
                    out["server"].append(latency["total_ms"] - latency["model_ms"])
                    out["client"].append(rtt - latency["model_ms"])
            next_at += period
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def run(args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        serve = ["--serve", str(port), "--data", tmp, "--server-loop", args.server_loop]
        child = subprocess.Popen(
            [sys.executable, __file__, *serve],
            stdout=subprocess.PIPE,
            env=env,
        )
        try:
            assert child.stdout is not None
            if child.stdout.readline().strip() != b"ready":
                raise RuntimeError("the server did not start")
            proc = psutil.Process(child.pid)
            me = psutil.Process()
            out: dict[str, Any] = {
                "server": [],
                "client": [],
                "errors": [],
                "measured_errors": 0,
            }
            start = time.perf_counter()
            warmup = start + 2.0
            until = warmup + args.duration
            url = f"ws://127.0.0.1:{port}"
            cpu_before = None
            tasks = [
                asyncio.create_task(typist(url, i, args.period, until, warmup, out))
                for i in range(args.typists)
            ]
            await asyncio.sleep(max(0.0, warmup - time.perf_counter()))
            cpu_before, my_cpu_before = proc.cpu_times(), me.cpu_times()
            window_start = time.perf_counter()
            lags: list[float] = []
            stop = asyncio.Event()
            ticking = asyncio.create_task(ticker(lags, stop))
            await asyncio.gather(*tasks)
            stop.set()
            await ticking
            cpu_after, my_cpu_after = proc.cpu_times(), me.cpu_times()
            window = time.perf_counter() - window_start
        finally:
            child.terminate()
            child.wait(10)
    cpu = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
    my_cpu = (my_cpu_after.user + my_cpu_after.system) - (my_cpu_before.user + my_cpu_before.system)
    server, client = out["server"], out["client"]
    failed = [math.inf] * out["measured_errors"]  # a failed request: infinitely slow
    return {
        "typists": args.typists,
        "period_ms": args.period * 1000,
        "server_loop": args.server_loop,
        "client_loop": args.client_loop,
        "requests": len(server) + out["measured_errors"],
        "answered": len(server),
        "errors": out["measured_errors"],
        "errors_all": len(out["errors"]),
        "server_overhead_ms": quantiles(server + failed),
        "client_overhead_ms": quantiles(client + failed),
        "server_overhead_answered_ms": quantiles(server),
        "client_overhead_answered_ms": quantiles(client),
        "server_cpu_ms_per_request": round(cpu * 1000 / max(1, len(server)), 3),
        "client_cpu_pct": round(my_cpu * 100 / window, 1),
        "client_loop_lag_ms": quantiles(lags) | {"max": round(max(lags, default=0.0), 3)},
        "first_errors": out["errors"][:3],
    }


def quantiles(values: list[float]) -> dict[str, float | str]:
    """p50 and p99 (``"inf"`` where a failed request lands)."""

    def figure(q: float) -> float | str:
        value = percentile(sorted(values), q) if values else math.nan
        return "inf" if math.isinf(value) else round(value, 3)

    return {"p50": figure(0.5), "p99": figure(0.99)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--typists", type=int, default=100)
    parser.add_argument("--period", type=float, default=0.3, help="seconds between requests")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds")
    parser.add_argument("--server-loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--client-loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        run_on(args.server_loop, serve(args.serve, args.data))
        return
    figures = run_on(args.client_loop, run(args))
    server, client = figures["server_overhead_ms"], figures["client_overhead_ms"]
    old_server = figures["server_overhead_answered_ms"]
    old_client = figures["client_overhead_answered_ms"]
    lag = figures["client_loop_lag_ms"]
    print(
        f"{figures['typists']} typists, a request every {figures['period_ms']:.0f} ms each,"
        f" server on {figures['server_loop']}, client on {figures['client_loop']}:"
        f" {figures['requests']} requests measured, {figures['errors']} failed"
        f" ({figures['errors_all']} in all, warm-up included)"
    )
    print(
        f"  server total - model : p50 {ms(server['p50'])}   p99 {ms(server['p99'])}"
        f"   (answered only: p50 {ms(old_server['p50'])}   p99 {ms(old_server['p99'])})"
    )
    print(
        f"  client rtt   - model : p50 {ms(client['p50'])}   p99 {ms(client['p99'])}"
        f"   (answered only: p50 {ms(old_client['p50'])}   p99 {ms(old_client['p99'])})"
    )
    print(f"  server CPU per request: {figures['server_cpu_ms_per_request']:.2f} ms")
    print(
        f"  client process: cpu {figures['client_cpu_pct']:.1f}% of a core, event-loop lag"
        f" p50 {ms(lag['p50'])}   p99 {ms(lag['p99'])}   max {ms(lag['max'])}"
    )
    client_bound = (
        float(lag["p99"]) > CLIENT_LAG_LIMIT_MS or figures["client_cpu_pct"] > CLIENT_CPU_LIMIT
    )
    if client_bound:
        print(
            f"  warning: the client is the bottleneck (loop lag p99 > {CLIENT_LAG_LIMIT_MS:.0f} ms"
            f" or cpu > {CLIENT_CPU_LIMIT:.0f}%): the client figures include its own queueing;"
            " the server figures do not"
        )
    goal = goal_met(client["p50"], 5) and goal_met(client["p99"], 15)
    print(f"  goal (p50 < 5 ms, p99 < 15 ms, client side): {'met' if goal else 'NOT met'}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


def ms(value: float | str) -> str:
    return "inf" if value == "inf" else f"{float(value):.2f} ms"


def goal_met(value: float | str, limit: float) -> bool:
    return value != "inf" and float(value) < limit


if __name__ == "__main__":
    main()
