"""Fan-out benchmark: our server against the reference Yjs server and pycrdt-websocket.

One document, N stock y-websocket clients (``fanout_load.mjs``), each sending R small edits
per second for D seconds, against each server in turn in one run, under the same load:

- ours: ``collab serve`` (SQLite store: every update written before it is broadcast and
  fsynced in groups behind; uvloop);
- reference: ``bin/server.js`` of npm ``y-websocket@1.5.4`` (in memory, no persistence);
- pycrdt-websocket (PyPI), on the ``websockets`` library (in memory);
- ours-memory (only when asked for): ``collab serve --store memory``, which shows what the
  durable appends cost;
- ours-NAME (only when asked for): ``collab serve`` with the options given by
  ``--variant NAME='OPTIONS'``, to compare a setting with the default in the same run, or
  run from another checkout given by ``--tree NAME=DIR``, to compare two commits.

Reports p50/p99 propagation latency (edit sent -> seen by every other client), server CPU
seconds and CPU per update, peak RSS, the memory of 1,000 idle open documents and of 1,000
idle connections (first round, each on a fresh server process), the slowest fdatasync of a
probe on the servers' filesystem during each round (a disk stall delays our fsyncs, not
the others'), then the ratios. With ``--rounds N`` the servers run N times in turn, each time
a fresh process, and the ratios are the medians of the rounds' ratios (on a shared machine
one round's figures swing by tens of percent). Not a pass/fail test.

Usage: .venv/bin/python tests/bench/fanout.py [--clients 50 --rate 10 --duration 20]
       [--servers ours,reference,pycrdt] [--idle 1000] [--rounds 1] [--json OUT]
       [--variant NAME='OPTIONS' ...] [--tree NAME=DIR ...]  (then list ours-NAME in --servers)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import psutil

ROOT = Path(__file__).resolve().parents[2]
JS = ROOT / "tests" / "js"
ROOM = "bench/main:load.md"
sys.path.insert(0, str(ROOT))

from gitsync import create_demo_repo  # noqa: E402
from protocol.yjs import SyncStep1, encode_message  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def start_server(
    kind: str, port: int, work: Path, extra: list[str] | None = None, tree: Path = ROOT
) -> subprocess.Popen[bytes]:
    """Start one server; ours runs ``collab serve`` from the checkout ``tree`` (its code)."""
    env = dict(os.environ)
    env.pop("COLLAB_SECRET", None)
    if kind.startswith("ours"):
        data = work / f"data-{port}"
        args = [sys.executable, "-m", "collab", "serve", "--repos", str(work / "repos")]
        args += ["--data-dir", str(data), "--port", str(port), "--grace", "600"]
        args += ["--log-level", "WARNING"]
        args += extra or []
    elif kind == "reference":
        args = ["node", str(JS / "node_modules" / "y-websocket" / "bin" / "server.js")]
        env.update(HOST="127.0.0.1", PORT=str(port))
    elif kind == "pycrdt":
        args = [sys.executable, str(ROOT / "tests" / "bench" / "pycrdt_ws_server.py"), str(port)]
    else:
        raise ValueError(kind)
    log = (work / f"{kind}-{port}.log").open("wb")
    proc = subprocess.Popen(args, env=env, cwd=tree, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    wait_port(port)
    return proc


def server_log(kind: str, port: int, work: Path) -> str:
    """The end of a server's output, to explain a failure."""
    path = work / f"{kind}-{port}.log"
    return path.read_text(errors="replace")[-3000:] if path.exists() else ""


@contextlib.asynccontextmanager
async def running_server(
    kind: str, work: Path, options: list[str] | None, tree: Path
) -> AsyncIterator[int]:
    """A fresh server process on a free port (yielded) for the block; its exit code and the end
    of its log are printed if the block fails, and it is stopped after it."""
    port = free_port()
    proc = start_server(kind, port, work, options, tree)
    proc_pid[kind] = proc.pid
    try:
        yield port
    except Exception:
        print(f"{kind} server exit code: {proc.poll()}", file=sys.stderr)
        print(server_log(kind, port, work), file=sys.stderr)
        raise
    finally:
        proc.terminate()
        proc.wait(10)


class Sampler:
    """Samples a process's RSS while a load runs; CPU seconds come from its counters."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak = 0
        self.times0 = self.proc.cpu_times()
        self.cpu0 = float(self.times0.user + self.times0.system)

    def cpu(self) -> float:
        times = self.proc.cpu_times()
        return float(times.user + times.system)

    def system_share(self) -> float:
        """The share of the CPU used since the start that was spent in the kernel."""
        times = self.proc.cpu_times()
        user = times.user - self.times0.user
        system = times.system - self.times0.system
        return float(system / (user + system)) if user + system > 0 else 0.0

    def rss(self) -> int:
        return int(self.proc.memory_info().rss)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.peak = max(self.peak, self.rss())
            await asyncio.sleep(0.1)


class DiskProbe:
    """Times a small write and fdatasync on the servers' filesystem every 50 ms while a load
    runs: a disk stall shows there, so a round it touched can be told apart (ours writes every
    update to its store before broadcasting it and fsyncs behind; the others keep nothing)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.times: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="disk probe", daemon=True)

    def __enter__(self) -> DiskProbe:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            while not self._stop.wait(0.05):
                started = time.perf_counter()
                os.pwrite(fd, os.urandom(4096), 0)
                os.fdatasync(fd)
                self.times.append(time.perf_counter() - started)
        finally:
            os.close(fd)

    def summary(self) -> dict[str, float]:
        times = sorted(self.times) or [0.0]
        p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
        return {
            "disk_sync_p99_ms": round(p99 * 1000, 2),
            "disk_sync_max_ms": round(times[-1] * 1000, 2),
        }


async def fanout(kind: str, port: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    url = f"ws://127.0.0.1:{port}" + ("/yjs" if kind.startswith("ours") else "")
    sampler = Sampler(proc_pid[kind])
    stop = asyncio.Event()
    sampling = asyncio.create_task(sampler.run(stop))
    cmd = ["node", str(ROOT / "tests" / "bench" / "fanout_load.mjs"), "--url", url]
    cmd += ["--room", ROOM, "--clients", str(args.clients), "--rate", str(args.rate)]
    cmd += ["--duration", str(args.duration), "--warmup", "2", "--params", "user=bench"]
    if args.full_clients is not None:
        cmd += ["--full-clients", str(args.full_clients)]
    with DiskProbe(work / "disk-probe") as probe:
        load = await asyncio.create_subprocess_exec(
            *cmd, cwd=JS, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await load.communicate()
    stop.set()
    await sampling
    cpu = sampler.cpu() - sampler.cpu0
    if load.returncode != 0:
        raise RuntimeError(f"load generator failed on {kind}: {err.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    result.update(
        server=kind, server_cpu_s=round(cpu, 3), peak_rss_mb=round(sampler.peak / 2**20, 1)
    )
    result.update(probe.summary())
    sent = max(1, int(result.get("edits_sent", 1)))
    result["cpu_ms_per_update"] = round(cpu * 1000 / sent, 4)
    result["cpu_system_share"] = round(sampler.system_share(), 3)
    return result


async def _idle_socket(session: aiohttp.ClientSession, url: str) -> aiohttp.ClientWebSocketResponse:
    ws = await session.ws_connect(url, max_msg_size=0)
    await ws.send_bytes(encode_message(SyncStep1(b"\x00")))
    await ws.receive(timeout=30)  # the server's answer: the room is loaded
    return ws


IDLE_WARMUP = 20  # connections opened, and kept open, before the baseline is taken


async def idle_memory(kind: str, port: int, count: int, *, distinct_docs: bool) -> float:
    """RSS growth (MiB) of the server holding ``count`` more idle connections, after a warm-up
    of ``IDLE_WARMUP`` that pays the one-time costs (a first room, compiled code, pools)."""
    base = f"ws://127.0.0.1:{port}" + ("/yjs" if kind.startswith("ours") else "")
    proc = psutil.Process(proc_pid[kind])
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def open_idle(first: int, n: int) -> list[aiohttp.ClientWebSocketResponse]:
            opened = []
            for start in range(first, first + n, 100):
                batch = []
                for i in range(start, min(first + n, start + 100)):
                    room = (
                        f"bench/main:idle/{i}.md" if distinct_docs else "bench/main:idle-shared.md"
                    )
                    batch.append(_idle_socket(session, f"{base}/{room}?user=idle{i}"))
                opened += await asyncio.gather(*batch)
            return opened

        sockets = await open_idle(0, IDLE_WARMUP)
        await asyncio.sleep(1.0)
        before = proc.memory_info().rss
        sockets += await open_idle(IDLE_WARMUP, count)
        await asyncio.sleep(1.0)
        after = proc.memory_info().rss
        await asyncio.gather(*(ws.close() for ws in sockets))
    return round((after - before) / 2**20, 1)


async def idle_on_fresh_server(
    kind: str,
    work: Path,
    options: list[str] | None,
    tree: Path,
    count: int,
    *,
    distinct_docs: bool,
) -> float:
    """:func:`idle_memory` on a server process started for it alone: one that has run the load
    (or the other idle phase) reuses the memory freed since, which hides part of the growth."""
    async with running_server(kind, work, options, tree) as port:
        return await idle_memory(kind, port, count, distinct_docs=distinct_docs)


proc_pid: dict[str, int] = {}

# Past these the generator (one Node.js thread) is the bottleneck, not the server.
GEN_CPU_LIMIT = 85.0
GEN_DELAY_LIMIT_MS = 20.0
# A probe fdatasync slower than this during a round marks a disk stall in it.
DISK_STALL_MS = 50.0


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--rate", type=float, default=10)
    parser.add_argument("--duration", type=float, default=20)
    parser.add_argument("--servers", default="ours,reference,pycrdt")
    parser.add_argument(
        "--full-clients",
        type=int,
        default=None,
        help="stock y-websocket clients (default: all); the rest are light protocol clients",
    )
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run every server this many times, alternating; ratios are medians of the rounds'",
    )
    parser.add_argument(
        "--ours-args", default="", help="extra `collab serve` options, e.g. '--group-window 0.004'"
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=OPTIONS",
        help="a server ours-NAME: `collab serve` with these options, e.g. nowindow='--group-window 0'",
    )
    parser.add_argument(
        "--tree",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="a server ours-NAME: `collab serve` run from another checkout (its code), "
        "e.g. base=/tmp/base to compare two commits in one run",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    variants = {"ours": shlex.split(args.ours_args), "ours-memory": ["--store", "memory"]}
    for spec in args.variant:
        name, _, options = spec.partition("=")
        variants[f"ours-{name}"] = shlex.split(options)
    trees: dict[str, Path] = {}
    for spec in args.tree:
        name, _, tree = spec.partition("=")
        trees[f"ours-{name}"] = Path(tree).resolve()
        variants.setdefault(f"ours-{name}", [])
    for kind in args.servers.split(","):
        if kind.startswith("ours") and kind not in variants:
            parser.error(f"unknown server {kind!r}: give it with --variant")
    rounds: list[dict[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for number in range(args.rounds):
            results: dict[str, dict[str, Any]] = {}
            for kind in args.servers.split(","):
                work = Path(tmp) / f"{kind}-{number + 1}"  # a fresh repository each time
                create_demo_repo(work / "repos" / "bench", {"load.md": "", "idle-shared.md": ""})
                options, tree = variants.get(kind), trees.get(kind, ROOT)
                async with running_server(kind, work, options, tree) as port:
                    result = await fanout(kind, port, args, work)
                if args.idle and number == 0:
                    for key, distinct in (("idle_docs_mb", True), ("idle_conns_mb", False)):
                        result[key] = await idle_on_fresh_server(
                            kind, work, options, tree, args.idle, distinct_docs=distinct
                        )
                results[kind] = result
                print(json.dumps({"round": number + 1, **result}), flush=True)
            rounds.append(results)
    report(rounds, args)
    if args.json:
        args.json.write_text(json.dumps(rounds, indent=2))


def report(rounds: list[dict[str, dict[str, Any]]], args: argparse.Namespace) -> None:
    print(
        f"\nfan-out: {args.clients} clients x {args.rate} edits/s x {args.duration} s, one document,"
        f" {len(rounds)} round(s), servers alternating"
    )
    header = f"{'server':<14} {'p50 ms':>8} {'p99 ms':>8} {'cpu s':>7} {'cpu ms/upd':>10} {'peak MB':>8} {'missing':>7} {'idle docs MB':>12} {'idle conns MB':>13} {'gen cpu %':>9} {'gen delay ms':>12} {'disk max ms':>11}"
    print(header)
    saturated, stalled = [], []
    for number, results in enumerate(rounds, 1):
        for kind, r in results.items():
            gen_cpu = float(r.get("generator_cpu_pct", 0))
            gen_delay = float(r.get("gen_loop_delay_p99_ms", 0))
            label = f"{kind} #{number}"
            idle_docs = f"{r['idle_docs_mb']:>12.1f}" if "idle_docs_mb" in r else f"{'':>12}"
            idle_conns = f"{r['idle_conns_mb']:>13.1f}" if "idle_conns_mb" in r else f"{'':>13}"
            print(
                f"{label:<14} {r.get('p50_ms', 0):>8.1f} {r.get('p99_ms', 0):>8.1f} {r['server_cpu_s']:>7.2f}"
                f" {r['cpu_ms_per_update']:>10.4f} {r['peak_rss_mb']:>8.1f} {r.get('missing', 0):>7}"
                f" {idle_docs} {idle_conns} {gen_cpu:>9.1f} {gen_delay:>12.1f}"
                f" {r.get('disk_sync_max_ms', 0):>11.1f}"
            )
            if gen_cpu > GEN_CPU_LIMIT or gen_delay > GEN_DELAY_LIMIT_MS:
                saturated.append(label)
            if r.get("disk_sync_max_ms", 0) > DISK_STALL_MS:
                stalled.append(label)
    if saturated:
        print(
            f"warning: the load generator was saturated against {', '.join(saturated)}"
            f" (cpu > {GEN_CPU_LIMIT:.0f}% or loop delay p99 > {GEN_DELAY_LIMIT_MS:.0f} ms):"
            " latencies there measure the generator, not the server"
        )
    if stalled:
        print(
            f"note: the disk stalled (a probe fdatasync over {DISK_STALL_MS:.0f} ms) during"
            f" {', '.join(stalled)}; it delays our fsyncs, and our broadcasts only when one of"
            " the store's checkpoints falls in it"
        )
    ours_kinds = [kind for kind in rounds[0] if kind.startswith("ours")] if rounds else []
    for kind in ours_kinds:
        for anchor, goal in (("reference", "<= 1.0"), ("pycrdt", "<= 0.5")):
            p99s, cpus = [], []
            for results in rounds:
                ours, other = results.get(kind), results.get(anchor)
                if ours is None or other is None:
                    continue
                if other.get("p99_ms"):
                    p99s.append(ours["p99_ms"] / other["p99_ms"])
                if other["cpu_ms_per_update"]:
                    cpus.append(ours["cpu_ms_per_update"] / other["cpu_ms_per_update"])
            if not p99s or not cpus:
                continue
            each = ", ".join(f"{p:.2f}/{c:.2f}" for p, c in zip(p99s, cpus, strict=False))
            print(
                f"ratio {kind}/{anchor}: p99 latency {statistics.median(p99s):.2f},"
                f" cpu per update {statistics.median(cpus):.2f} (median of rounds; goal {goal})"
                f"  [each round p99/cpu: {each}]"
            )


if __name__ == "__main__":
    asyncio.run(main())
