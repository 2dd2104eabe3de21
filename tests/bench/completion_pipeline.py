"""Completion pipeline benchmark: what the engine adds around the model.

A server runs in a child process with a backend that answers instantly; N simulated typists
(one connection and one document each, all on one branch) type a character and ask for a
completion at the cursor every P ms, for D seconds. Reports the p50/p99 of

- server: the reply's ``total_ms`` minus its ``model_ms`` (reading the live document, other
  files as context, the cache, the queue, the worker, the anchor), and
- client: the round trip the typist sees minus ``model_ms`` (adds the socket and msgpack),

with the goal p50 < 5 ms and p99 < 15 ms. Not a pass/fail test.

Usage: .venv/bin/python tests/bench/completion_pipeline.py [--typists 100 --period 0.3
       --duration 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
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
        child = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(port), "--data", tmp],
            stdout=subprocess.PIPE,
            env=env,
        )
        try:
            assert child.stdout is not None
            if child.stdout.readline().strip() != b"ready":
                raise RuntimeError("the server did not start")
            proc = psutil.Process(child.pid)
            out: dict[str, Any] = {"server": [], "client": [], "errors": []}
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
            cpu_before = proc.cpu_times()
            await asyncio.gather(*tasks)
            cpu_after = proc.cpu_times()
        finally:
            child.terminate()
            child.wait(10)
    cpu = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
    server, client = out["server"], out["client"]
    return {
        "typists": args.typists,
        "period_ms": args.period * 1000,
        "requests": len(server),
        "errors": len(out["errors"]),
        "server_overhead_ms": {
            "p50": round(percentile(server, 0.5), 3),
            "p99": round(percentile(server, 0.99), 3),
        },
        "client_overhead_ms": {
            "p50": round(percentile(client, 0.5), 3),
            "p99": round(percentile(client, 0.99), 3),
        },
        "server_cpu_ms_per_request": round(cpu * 1000 / max(1, len(server)), 3),
        "first_errors": out["errors"][:3],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--typists", type=int, default=100)
    parser.add_argument("--period", type=float, default=0.3, help="seconds between requests")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        asyncio.run(serve(args.serve, args.data))
        return
    figures = asyncio.run(run(args))
    server, client = figures["server_overhead_ms"], figures["client_overhead_ms"]
    print(
        f"{figures['typists']} typists, a request every {figures['period_ms']:.0f} ms each, "
        f"{figures['requests']} requests measured, {figures['errors']} errors"
    )
    print(f"  server total - model : p50 {server['p50']:.2f} ms   p99 {server['p99']:.2f} ms")
    print(f"  client rtt   - model : p50 {client['p50']:.2f} ms   p99 {client['p99']:.2f} ms")
    print(f"  server CPU per request: {figures['server_cpu_ms_per_request']:.2f} ms")
    goal = client["p50"] < 5 and client["p99"] < 15
    print(f"  goal (p50 < 5 ms, p99 < 15 ms, client side): {'met' if goal else 'NOT met'}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
