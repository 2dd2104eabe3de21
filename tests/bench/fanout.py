"""Fan-out benchmark: our server against the reference Yjs server and pycrdt-websocket.

N stock y-websocket clients (``fanout_load.mjs``) on one document (or, with ``--docs D``, on
each of D documents), each sending R small edits per second for D seconds, against each
server in turn in one run, under the same load:

- ours: ``collab serve`` (SQLite store: every update written before it is broadcast and
  fsynced in groups behind; uvloop);
- reference: ``bin/server.js`` of npm ``y-websocket@1.5.4`` (in memory, no persistence; Node);
- reference-leveldb: the same with ``YPERSISTENCE=<dir>`` (every update stored in LevelDB,
  not fsynced);
- pycrdt: pycrdt-websocket (PyPI) on the ``websockets`` library (in memory), on uvloop like
  ours; pycrdt-asyncio: the same on asyncio's own loop (how this anchor ran before);
- ours-memory (only when asked for): ``collab serve --store memory``, which shows what the
  durable appends cost;
- ours-NAME (only when asked for): ``collab serve`` with the options given by
  ``--variant NAME='OPTIONS'``, to compare a setting with the default in the same run, or
  run from another checkout given by ``--tree NAME=DIR``, to compare two commits.

Every client connects as its own user (``?user=bench<i>``), so ours' per-user quotas see what
they would see from that many people.

What is measured, and how:

- latency of an edit: from its sending until every other client of its document has
  integrated it; p50/p99 over every measured edit. An edit some client never got (within the
  drain) is lost: its latency counts as infinite, so a percentile that lands on a lost edit
  is reported as ``inf``, and the lost edits are counted. (``p50/p99 delivered``: over the
  fully delivered edits only, as this benchmark reported before; a lost edit flatters them.)
- server CPU per edit: the server process's CPU times sampled when the measured window
  starts and when it ends (the generator says when), divided by the edits sent in it.
  (``cpu to drain``: from the window's start until every edit is delivered; well above the
  window's figure, it shows a server that fell behind and worked past the window.)
  (``cpu old``: the CPU of connect, warm-up, measurement and drain divided by the measured
  edits, as this benchmark reported before.)
- the load generator's health: its process's CPU over the window (100 = one core), its
  event-loop lag (p99 and max), and the whole machine's busy share; past the limits below
  the generator, or the machine, is the bottleneck and the latencies say little about the
  server.
- peak RSS, the memory of 1,000 idle open documents and of 1,000 idle connections (first
  round, each on a fresh server process), and the slowest fdatasync of a probe on the
  servers' filesystem during each round (a disk stall delays our fsyncs, not the others').

The servers run in turn within a round; the order is reversed every other round, so none
always runs first (on a cold machine) or last. With ``--rounds N`` each server runs N times,
each time a fresh process, and the ratios are the medians of the rounds' ratios (on a shared
machine one round's figures swing by tens of percent). Not a pass/fail test.

Usage: .venv/bin/python tests/bench/fanout.py [--clients 50 --rate 10 --duration 20]
       [--docs 1] [--servers ours,reference,pycrdt] [--idle 1000] [--rounds 1] [--json OUT]
       [--variant NAME='OPTIONS' ...] [--tree NAME=DIR ...]  (then list ours-NAME in --servers)
       [--ours-tree DIR]  (run ours from another checkout, e.g. a clean export of a commit)

See ``fanout_matrix.py`` for the matrices over fan-out and over documents.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psutil

ROOT = Path(__file__).resolve().parents[2]
JS = ROOT / "tests" / "js"
ROOM = "bench/main:load.md"
DOC_ROOM = "bench/main:docs/{d}.md"  # the rooms of a run over several documents
sys.path.insert(0, str(ROOT))

from gitsync import create_demo_repo  # noqa: E402
from protocol.yjs import SyncStep1, encode_message  # noqa: E402

ANCHORS = ("reference", "reference-leveldb", "pycrdt", "pycrdt-asyncio")
LOOPS = {
    "ours": "uvloop (as collab serve runs)",
    "reference": "Node.js (libuv)",
    "reference-leveldb": "Node.js (libuv)",
    "pycrdt": "uvloop",
    "pycrdt-asyncio": "asyncio's own loop",
}


def loop_of(kind: str) -> str:
    return LOOPS["ours" if kind.startswith("ours") else kind]


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
    elif kind in ("reference", "reference-leveldb"):
        args = ["node", str(JS / "node_modules" / "y-websocket" / "bin" / "server.js")]
        env.update(HOST="127.0.0.1", PORT=str(port))
        if kind == "reference-leveldb":
            env["YPERSISTENCE"] = str(work / f"leveldb-{port}")
    elif kind in ("pycrdt", "pycrdt-asyncio"):
        args = [sys.executable, str(ROOT / "tests" / "bench" / "pycrdt_ws_server.py"), str(port)]
        args += ["--loop", "asyncio" if kind == "pycrdt-asyncio" else "uvloop"]
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
    kind: str, work: Path, options: list[str] | None = None, tree: Path = ROOT
) -> AsyncIterator[int]:
    """A fresh server process on a free port (yielded) for the block; its exit code and the end
    of its log are printed if the block fails, and it is stopped after it."""
    work.mkdir(parents=True, exist_ok=True)
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
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def prepare_repo(work: Path) -> None:
    """The repository ours serves (the others need none): a fresh one for every server run."""
    create_demo_repo(work / "repos" / "bench", {"load.md": "", "idle-shared.md": ""})


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def host_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy, all cores together (guest time is
    already counted in user time)."""
    times = psutil.cpu_times()
    busy = ("user", "nice", "system", "irq", "softirq", "steal")
    return float(sum(getattr(times, name, 0.0) for name in busy))


class Sampler:
    """Samples a process's RSS while a load runs; CPU seconds come from its counters."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak = 0
        self.times0 = self.proc.cpu_times()
        self.cpu0 = float(self.times0.user + self.times0.system)

    def cpu(self) -> float:
        return cpu_seconds(self.proc)

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


@dataclass(frozen=True, slots=True)
class Load:
    """One load: ``clients`` stock clients on each of ``docs`` documents, ``rate`` edits per
    second each, ``duration`` measured seconds after ``warmup``."""

    clients: int
    rate: float
    duration: float
    docs: int = 1
    warmup: float = 2.0
    drain: float = 15.0
    workers: int = 1
    full_clients: int | None = None
    connect_timeout: float = 60.0

    @property
    def room(self) -> str:
        return ROOM if self.docs == 1 else DOC_ROOM


def num(value: Any) -> float:
    """A latency from the generator as a float: ``"inf"`` (a lost edit) is infinity."""
    if value is None:
        return math.nan
    return math.inf if value == "inf" else float(value)


async def fanout(kind: str, port: int, load: Load, work: Path) -> dict[str, Any]:
    """Run ``load`` against the server ``kind`` on ``port``; its figures, fair and old."""
    url = f"ws://127.0.0.1:{port}" + ("/yjs" if kind.startswith("ours") else "")
    sampler = Sampler(proc_pid[kind])
    stop = asyncio.Event()
    sampling = asyncio.create_task(sampler.run(stop))
    cmd = ["node", str(ROOT / "tests" / "bench" / "fanout_load.mjs"), "--url", url]
    cmd += ["--room", load.room, "--clients", str(load.clients), "--docs", str(load.docs)]
    cmd += ["--rate", str(load.rate), "--duration", str(load.duration)]
    cmd += ["--warmup", str(load.warmup), "--drain", str(load.drain)]
    cmd += ["--workers", str(load.workers), "--connect-timeout", str(load.connect_timeout)]
    cmd += ["--params", "user=bench{r}", "--events"]
    if load.full_clients is not None:
        cmd += ["--full-clients", str(load.full_clients)]
    window: dict[str, tuple[float, float, float, float]] = {}
    with DiskProbe(work / "disk-probe") as probe:
        gen = await asyncio.create_subprocess_exec(
            *cmd,
            cwd=JS,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=2**24,
        )
        gen_proc = psutil.Process(gen.pid)
        assert gen.stdout is not None and gen.stderr is not None
        errors = asyncio.create_task(gen.stderr.read())
        last = b""
        async for line in gen.stdout:
            if line.startswith(b'{"event":'):
                window[json.loads(line)["event"]] = (
                    time.perf_counter(),
                    sampler.cpu(),
                    cpu_seconds(gen_proc),
                    host_busy_seconds(),
                )
            elif line.strip():
                last = line
        await gen.wait()
        err = await errors
    stop.set()
    await sampling
    whole_cpu = sampler.cpu() - sampler.cpu0
    if gen.returncode != 0 or "measure_end" not in window:
        raise RuntimeError(f"load generator failed on {kind}: {err.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(last)
    (t0, cpu0, gen0, host0), (t1, cpu1, gen1, host1) = (
        window["measure_start"],
        window["measure_end"],
    )
    wall = max(t1 - t0, 1e-9)
    cpu = cpu1 - cpu0
    sent = max(1, int(result.get("edits_sent", 1)))
    drained = window.get("drained", window["measure_end"])[1] - cpu0
    result.update(
        server=kind,
        loop=loop_of(kind),
        window_s=round(wall, 3),
        server_cpu_s=round(cpu, 3),
        cpu_ms_per_edit=round(cpu * 1000 / sent, 4),
        cpu_ms_per_edit_to_drain=round(drained * 1000 / sent, 4),
        server_cpu_whole_s=round(whole_cpu, 3),
        cpu_ms_per_edit_old=round(whole_cpu * 1000 / sent, 4),
        gen_cpu_window_pct=round((gen1 - gen0) * 100 / wall, 1),
        host_busy_pct=round((host1 - host0) * 100 / wall / (psutil.cpu_count() or 1), 1),
        peak_rss_mb=round(sampler.peak / 2**20, 1),
    )
    result.update(probe.summary())
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

# Past these the generator (one Node.js thread per worker) is the bottleneck, not the server.
GEN_CPU_LIMIT = 85.0
GEN_DELAY_LIMIT_MS = 20.0
# Past this share of all cores busy, the machine is: the server and the generator compete.
HOST_BUSY_LIMIT = 95.0
# A probe fdatasync slower than this during a round marks a disk stall in it.
DISK_STALL_MS = 50.0


def generator_saturated(r: dict[str, Any]) -> bool:
    workers = max(1, int(r.get("workers", 1)))
    return (
        float(r.get("gen_cpu_window_pct", 0)) > GEN_CPU_LIMIT * workers
        or float(r.get("gen_loop_delay_p99_ms", 0)) > GEN_DELAY_LIMIT_MS
    )


def in_order(servers: Sequence[str], turn: int) -> list[str]:
    """The servers in the order of round (or cell) ``turn``: reversed every other time."""
    return list(servers) if turn % 2 == 0 else list(reversed(servers))


def ratio(ours: float, other: float) -> float:
    """ours/other, with lost edits: inf/x is inf, x/inf is 0, inf/inf is nan."""
    if math.isnan(ours) or math.isnan(other):
        return math.nan
    if math.isinf(ours) or math.isinf(other):
        return math.nan if math.isinf(ours) and math.isinf(other) else (ours / other)
    return ours / other if other > 0 else math.nan


def med(values: Sequence[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return statistics.median(values) if values else math.nan


def median_ratio(key: str, pairs: Sequence[tuple[dict[str, Any], dict[str, Any]]]) -> float:
    """The median over rounds of ours/anchor for the figure ``key``."""
    return med([ratio(num(a[key]), num(b[key])) for a, b in pairs])


def fmt(value: float, width: int, digits: int = 1) -> str:
    if math.isnan(value):
        return f"{'-':>{width}}"
    if math.isinf(value):
        return f"{'inf':>{width}}"
    return f"{value:>{width}.{digits}f}"


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=50, help="clients per document")
    parser.add_argument("--docs", type=int, default=1, help="documents")
    parser.add_argument("--rate", type=float, default=10, help="edits per second per client")
    parser.add_argument("--duration", type=float, default=20, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--drain", type=float, default=15)
    parser.add_argument("--workers", type=int, default=1, help="generator threads")
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
    parser.add_argument(
        "--ours-tree",
        type=Path,
        default=ROOT,
        help="the checkout ours (and its variants) run from (default: this one), e.g. a clean"
        " export of a commit",
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
    servers = args.servers.split(",")
    for kind in servers:
        if kind.startswith("ours") and kind not in variants:
            parser.error(f"unknown server {kind!r}: give it with --variant")
        if not kind.startswith("ours") and kind not in ANCHORS:
            parser.error(f"unknown server {kind!r}: one of ours, {', '.join(ANCHORS)}")
    load = Load(
        clients=args.clients,
        docs=args.docs,
        rate=args.rate,
        duration=args.duration,
        warmup=args.warmup,
        drain=args.drain,
        workers=args.workers,
        full_clients=args.full_clients,
    )
    rounds: list[dict[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for number in range(args.rounds):
            results: dict[str, dict[str, Any]] = {}
            for kind in in_order(servers, number):
                work = Path(tmp) / f"{kind}-{number + 1}"  # a fresh repository each time
                prepare_repo(work)
                options, tree = variants.get(kind), trees.get(kind, args.ours_tree.resolve())
                async with running_server(kind, work, options, tree) as port:
                    result = await fanout(kind, port, load, work)
                if args.idle and number == 0:
                    for key, distinct in (("idle_docs_mb", True), ("idle_conns_mb", False)):
                        result[key] = await idle_on_fresh_server(
                            kind, work, options, tree, args.idle, distinct_docs=distinct
                        )
                results[kind] = result
                print(json.dumps({"round": number + 1, **result}), flush=True)
            rounds.append({kind: results[kind] for kind in servers})
    report(rounds, args, servers)
    if args.json:
        args.json.write_text(json.dumps(rounds, indent=2))


def report(
    rounds: list[dict[str, dict[str, Any]]], args: argparse.Namespace, servers: list[str]
) -> None:
    docs = f"{args.docs} documents" if args.docs > 1 else "one document"
    print(
        f"\nfan-out: {args.clients} clients x {args.rate} edits/s x {args.duration} s, {docs},"
        f" {len(rounds)} round(s), the servers' order reversed every other round"
    )
    print("event loops: " + "; ".join(f"{kind}: {loop_of(kind)}" for kind in servers))
    header = (
        f"{'server':<20} {'p50 ms':>7} {'p99 ms':>7} {'lost':>5} {'p50 dlv':>7} {'p99 dlv':>7}"
        f" {'cpu ms/edit':>11} {'to drain':>8} {'cpu old':>8} {'peak MB':>8} {'idle docs MB':>12}"
        f" {'idle conns MB':>13} {'gen cpu %':>9} {'gen lag p99':>11} {'host %':>6}"
        f" {'disk max ms':>11}"
    )
    print(header)
    saturated, stalled, unconverged = [], [], []
    for number, results in enumerate(rounds, 1):
        for kind, r in results.items():
            label = f"{kind} #{number}"
            idle_docs = fmt(r.get("idle_docs_mb", math.nan), 12)
            idle_conns = fmt(r.get("idle_conns_mb", math.nan), 13)
            print(
                f"{label:<20} {fmt(num(r['p50_ms']), 7, 2)} {fmt(num(r['p99_ms']), 7, 2)}"
                f" {r['lost']:>5} {fmt(num(r['p50_delivered_ms']), 7, 2)}"
                f" {fmt(num(r['p99_delivered_ms']), 7, 2)} {r['cpu_ms_per_edit']:>11.4f}"
                f" {r['cpu_ms_per_edit_to_drain']:>8.4f}"
                f" {r['cpu_ms_per_edit_old']:>8.4f} {r['peak_rss_mb']:>8.1f} {idle_docs}"
                f" {idle_conns} {r['gen_cpu_window_pct']:>9.1f}"
                f" {r['gen_loop_delay_p99_ms']:>11.1f} {r['host_busy_pct']:>6.1f}"
                f" {r.get('disk_sync_max_ms', 0):>11.1f}"
            )
            if generator_saturated(r) or r["host_busy_pct"] > HOST_BUSY_LIMIT:
                saturated.append(label)
            if r.get("disk_sync_max_ms", 0) > DISK_STALL_MS:
                stalled.append(label)
            if not r.get("converged", False):
                unconverged.append(label)
    print(
        "p50/p99: every measured edit, a lost one as infinite; dlv: the delivered ones only"
        " (as before). cpu ms/edit: server CPU over the measured window / its edits; cpu old:"
        " CPU of connect, warm-up, window and drain / the same edits (as before)."
    )
    if saturated:
        print(
            f"warning: the load generator or the machine was saturated against"
            f" {', '.join(saturated)} (generator cpu > {GEN_CPU_LIMIT:.0f}% a thread, loop lag"
            f" p99 > {GEN_DELAY_LIMIT_MS:.0f} ms, or over {HOST_BUSY_LIMIT:.0f}% of the machine"
            " busy): latencies there measure the generator, not the server"
        )
    if stalled:
        print(
            f"note: the disk stalled (a probe fdatasync over {DISK_STALL_MS:.0f} ms) during"
            f" {', '.join(stalled)}; it delays our fsyncs, and our broadcasts only when one of"
            " the store's checkpoints falls in it"
        )
    if unconverged:
        print(f"warning: the documents did not converge in {', '.join(unconverged)}")
    goals = {"reference": "<= 1.0", "pycrdt": "<= 0.5"}
    for kind in [k for k in servers if k.startswith("ours")]:
        for anchor in [k for k in servers if not k.startswith("ours")]:
            pairs = [(r[kind], r[anchor]) for r in rounds if kind in r and anchor in r]
            if not pairs:
                continue
            goal = goals.get(anchor)
            print(
                f"ratio {kind}/{anchor}: p50 {fmt(median_ratio('p50_ms', pairs), 0, 2)},"
                f" p99 {fmt(median_ratio('p99_ms', pairs), 0, 2)},"
                f" cpu per edit {fmt(median_ratio('cpu_ms_per_edit', pairs), 0, 2)}"
                f" (old: p99 {fmt(median_ratio('p99_delivered_ms', pairs), 0, 2)},"
                f" cpu {fmt(median_ratio('cpu_ms_per_edit_old', pairs), 0, 2)})"
                + (f"; goal {goal}" if goal else "")
                + " [median of rounds]"
            )


if __name__ == "__main__":
    asyncio.run(main())
