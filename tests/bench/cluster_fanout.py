"""Cluster benchmark: stock clients spread over several ``collab serve --redis`` nodes.

Three parts, in one run, each load made by stock clients (``fanout_load.mjs``, Node.js):

1. Cross-node propagation. The same load (``--clients`` stock y-websocket clients on each of
   ``--docs`` documents, ``--rate`` edits per second each) against: ``ours`` (one plain
   ``collab serve``, SQLite store), ``ours-redis`` (one ``collab serve --redis`` node),
   ``ours-redis-x2`` and ``ours-redis-x3`` (2 and 3 nodes on one Redis and one repositories'
   directory). With several nodes the clients of every document are dealt over the nodes in
   turn, so every document has peers on every node (up to its clients) and every edit
   reaches most of its peers through another node: its node appends it to the document's
   Redis stream, every other node reads it from there and relays it to its own peers.
2. Hocuspocus under the same load: ``hocuspocus`` (one plain instance), ``hocuspocus-redis``
   and ``hocuspocus-redis-x2`` (one and two instances with ``@hocuspocus/extension-redis``,
   which relays updates over Redis pub/sub and keeps nothing: no database extension), driven
   by stock ``@hocuspocus/provider`` clients (Hocuspocus 2 and later prefix every message
   with the document's name, which y-websocket clients do not speak). Pinned versions:
   ``tests/bench/hocuspocus/package.json`` and its lock file, installed by
   ``make bench-cluster``.
3. Capacity: documents with 2 clients each, each typing 2 edits per second, in steps
   (``--ramp-docs``), on one node and on two (``--ramp-setups``: with ``ours-redis-x2`` the
   two clients of every document are on different nodes, as a load balancer that knows
   nothing of documents leaves them; with ``ours-redis-x2-bydoc`` both are on the same node,
   the documents dealt over the nodes). A ramp stops at the first step whose p99 passes
   ``--ramp-limit`` (50 ms) or that loses an edit, in two tries (one p99 over a few seconds
   rests on a few edits, which one hiccup of a shared machine delays), then tries the middle
   of the last step held and that one (``--ramp-refine``); the figure is the most documents
   held.

Every setup runs on fresh processes: a fresh repository, a fresh ``redis-server`` (with
``--appendonly yes --appendfsync always``, what the cluster's durability needs; every setup
with Redis gets one, Hocuspocus too), fresh nodes, each with a data directory of its own.

What is measured, and how (as in ``fanout.py``):

- latency of an edit: from its sending until every other client of its document has
  integrated it; p50/p99 over every measured edit, a lost edit counted as infinite;
- CPU per edit: the CPU times of every node's process and of redis-server, sampled when the
  measured window starts and ends (the generator says when), summed, divided by the edits
  sent in the window; ``redis`` is redis-server's share of it;
- the generator's CPU over the window, its event-loop lag and the machine's busy share; a
  row where the generator or the machine was saturated is marked ``*``; one where the
  generator's own event loop was held up over 100 ms (at a tenth of a core: it was not
  scheduled, the machine stalled, and every edit in flight waited as long) is marked ``!``,
  left out of the ratios when the setup has a clean round.

Ratios printed: each cluster setup against the single node (p99 as a difference in ms, the
project's goal being within 5 ms; CPU per edit as a ratio, the goal at most 1.3x), against
the plain ``collab serve`` too, and ours against Hocuspocus at the same number of nodes.
Every setup of parts 1 and 2 runs ``--rounds`` times (2), in an order reversed every other
round; the ratios are medians over the rounds (on a shared machine one round's p99 swings by
tens of milliseconds when something else takes the cores). Not a pass/fail test.

Usage (about 8 minutes on 2 cores with the defaults):
  make bench-cluster
  .venv/bin/python tests/bench/cluster_fanout.py [--clients 6 --docs 5 --rate 4 --duration 10]
      [--setups ours,ours-redis,...] [--rounds 2] [--ramp-docs 25,50,100,200,400,800]
      [--ramp-setups ours-redis,ours-redis-x2,ours-redis-x2-bydoc] [--ramp-duration 5]
      [--ramp-refine 1] [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fanout import (
    GEN_CPU_LIMIT,
    GEN_DELAY_LIMIT_MS,
    HOST_BUSY_LIMIT,
    JS,
    ROOT,
    Load,
    fmt,
    free_port,
    generator_saturated,
    host_busy_seconds,
    in_order,
    med,
    num,
    prepare_repo,
    ratio,
    start_server,
    wait_port,
)
from redisproc import RedisProcess

HOCUSPOCUS = ROOT / "tests" / "bench" / "hocuspocus"
P99_GOAL_MS = 5.0
CPU_GOAL = 1.3


@dataclass(frozen=True, slots=True)
class Setup:
    """Who serves a load: ``engine`` (ours or hocuspocus) on ``nodes`` processes, sharing a
    Redis when ``redis``; ``place`` deals each document's clients over the nodes
    (``client``) or puts them all on one node, the documents dealt over the nodes (``doc``)."""

    engine: str
    nodes: int
    redis: bool
    place: str = "client"

    @property
    def provider(self) -> str:
        return "hocuspocus" if self.engine == "hocuspocus" else "y-websocket"


SETUPS = {
    "ours": Setup("ours", 1, False),
    "ours-redis": Setup("ours", 1, True),
    "ours-redis-x2": Setup("ours", 2, True),
    "ours-redis-x3": Setup("ours", 3, True),
    "ours-redis-x2-bydoc": Setup("ours", 2, True, "doc"),
    "hocuspocus": Setup("hocuspocus", 1, False),
    "hocuspocus-redis": Setup("hocuspocus", 1, True),
    "hocuspocus-redis-x2": Setup("hocuspocus", 2, True),
}
DEFAULT_SETUPS = [
    "ours",
    "ours-redis",
    "ours-redis-x2",
    "ours-redis-x3",
    "hocuspocus",
    "hocuspocus-redis",
    "hocuspocus-redis-x2",
]
DEFAULT_RAMP = ["ours-redis", "ours-redis-x2", "ours-redis-x2-bydoc"]


def require_tools(setups: Sequence[Setup]) -> None:
    """Exit with a clear message when a tool or package the run needs is missing."""
    missing = []
    if shutil.which("node") is None:
        missing.append("node (Node.js 18 or later) is not on PATH")
    if any(s.redis for s in setups) and shutil.which("redis-server") is None:
        missing.append("redis-server is not on PATH (Debian: apt-get install redis-server)")
    if not (JS / "node_modules" / "y-websocket").is_dir():
        missing.append(f"{JS}/node_modules is missing: run `make setup`")
    if (
        any(s.engine == "hocuspocus" for s in setups)
        and not (HOCUSPOCUS / "node_modules" / "@hocuspocus" / "extension-redis").is_dir()
    ):
        missing.append(f"{HOCUSPOCUS}/node_modules is missing: run `make bench-cluster`")
    if missing:
        sys.exit("cluster_fanout.py cannot run:\n  " + "\n  ".join(missing))


@dataclass(slots=True)
class Cluster:
    """A setup's running processes: its nodes' URLs and pids, redis-server's pid (or 0)."""

    urls: list[str] = field(default_factory=list)
    node_pids: list[int] = field(default_factory=list)
    redis_pid: int = 0


def _start_hocuspocus(port: int, work: Path, redis: RedisProcess | None) -> subprocess.Popen[bytes]:
    args = ["node", str(HOCUSPOCUS / "server.mjs"), "--port", str(port)]
    if redis is not None:
        args += ["--redis", f"127.0.0.1:{redis.port}", "--id", f"hp{port}"]
    log = (work / f"hocuspocus-{port}.log").open("wb")
    proc = subprocess.Popen(args, cwd=HOCUSPOCUS, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    wait_port(port)
    return proc


@contextlib.asynccontextmanager
async def running(setup: Setup, work: Path) -> AsyncIterator[Cluster]:
    """Fresh processes for ``setup`` (a repository, a redis-server, the nodes) for the block;
    the end of every node's log is printed if the block fails."""
    work.mkdir(parents=True, exist_ok=True)
    prepare_repo(work)
    redis = RedisProcess(work / "redis") if setup.redis else None
    procs: list[subprocess.Popen[bytes]] = []
    cluster = Cluster()
    try:
        if redis is not None:
            redis.start()
            assert redis.process is not None
            cluster.redis_pid = redis.process.pid
        for i in range(setup.nodes):
            port = free_port()
            if setup.engine == "ours":
                extra = ["--redis", redis.url, "--node-id", f"n{i}"] if redis else []
                procs.append(start_server("ours", port, work, extra))
                cluster.urls.append(f"ws://127.0.0.1:{port}/yjs")
            else:
                procs.append(_start_hocuspocus(port, work, redis))
                cluster.urls.append(f"ws://127.0.0.1:{port}")
            cluster.node_pids.append(procs[-1].pid)
        yield cluster
    except Exception:
        for log in sorted(work.glob("*.log")):
            print(f"--- {log.name}:\n{log.read_text(errors='replace')[-3000:]}", file=sys.stderr)
        raise
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if redis is not None:
            redis.stop()


def _cpu(pids: Sequence[int]) -> list[float]:
    """CPU seconds of each process (and its children), in the order given."""
    out = []
    for pid in pids:
        proc = psutil.Process(pid)
        total = 0.0
        for one in [proc, *proc.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                times = one.cpu_times()
                total += times.user + times.system
        out.append(total)
    return out


async def measure(setup: Setup, cluster: Cluster, load: Load) -> dict[str, Any]:
    """Run ``load`` against ``cluster``; the generator's figures, with CPU per edit added."""
    pids = [*cluster.node_pids, *([cluster.redis_pid] if cluster.redis_pid else [])]
    cmd = ["node", str(ROOT / "tests" / "bench" / "fanout_load.mjs")]
    cmd += ["--url", ",".join(cluster.urls), "--provider", setup.provider]
    cmd += ["--room", load.room, "--clients", str(load.clients), "--docs", str(load.docs)]
    cmd += ["--rate", str(load.rate), "--duration", str(load.duration)]
    cmd += ["--warmup", str(load.warmup), "--drain", str(load.drain)]
    cmd += ["--workers", str(load.workers), "--connect-timeout", str(load.connect_timeout)]
    cmd += ["--params", "user=bench{r}", "--events"]
    if setup.place == "doc":
        cmd += ["--place", "doc"]
    window: dict[str, tuple[float, list[float], float, float]] = {}
    gen = await asyncio.create_subprocess_exec(
        *cmd, cwd=JS, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, limit=2**24
    )
    gen_proc = psutil.Process(gen.pid)
    assert gen.stdout is not None and gen.stderr is not None
    errors = asyncio.create_task(gen.stderr.read())
    last = b""
    async for line in gen.stdout:
        if line.startswith(b'{"event":'):
            times = gen_proc.cpu_times()
            window[json.loads(line)["event"]] = (
                time.perf_counter(),
                _cpu(pids),
                times.user + times.system,
                host_busy_seconds(),
            )
        elif line.strip():
            last = line
    await gen.wait()
    err = await errors
    if gen.returncode != 0 or "measure_end" not in window:
        raise RuntimeError(f"load generator failed: {err.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(last)
    (t0, cpu0, gen0, host0), (t1, cpu1, gen1, host1) = (
        window["measure_start"],
        window["measure_end"],
    )
    wall = max(t1 - t0, 1e-9)
    sent = max(1, int(result.get("edits_sent", 1)))
    used = [b - a for a, b in zip(cpu0, cpu1, strict=True)]
    nodes_cpu = sum(used[: len(cluster.node_pids)])
    redis_cpu = sum(used[len(cluster.node_pids) :])
    result.update(
        window_s=round(wall, 3),
        cpu_ms_per_edit=round((nodes_cpu + redis_cpu) * 1000 / sent, 4),
        redis_ms_per_edit=round(redis_cpu * 1000 / sent, 4),
        node_cpu_pct=[round(u * 100 / wall, 1) for u in used[: len(cluster.node_pids)]],
        gen_cpu_window_pct=round((gen1 - gen0) * 100 / wall, 1),
        host_busy_pct=round((host1 - host0) * 100 / wall / (psutil.cpu_count() or 1), 1),
    )
    return result


def saturated(r: dict[str, Any]) -> bool:
    return generator_saturated(r) or float(r["host_busy_pct"]) > HOST_BUSY_LIMIT


STALL_MS = 100.0
"""A generator's event loop held up this long (at ~10% of a core) was not scheduled: the
machine stalled, and every edit in flight took that long, whatever served it."""


def stalled(r: dict[str, Any]) -> bool:
    return float(r.get("gen_loop_delay_max_ms", 0)) > STALL_MS


def row(label: str, r: dict[str, Any]) -> str:
    mark = "!" if stalled(r) else "*" if saturated(r) else " "
    nodes = "/".join(f"{x:.0f}" for x in r["node_cpu_pct"])
    return (
        f"{label:<22}{mark} {fmt(num(r['p50_ms']), 7, 2)} {fmt(num(r['p99_ms']), 7, 2)}"
        f" {r['lost']:>5} {r['cpu_ms_per_edit']:>11.4f} {r['redis_ms_per_edit']:>9.4f}"
        f" {nodes:>12} {r['gen_cpu_window_pct']:>9.1f} {r['gen_loop_delay_p99_ms']:>11.1f}"
        f" {r['host_busy_pct']:>6.1f} {'yes' if r.get('converged') else 'NO':>9}"
    )


HEADER = (
    f"{'setup':<23} {'p50 ms':>7} {'p99 ms':>7} {'lost':>5} {'cpu ms/edit':>11}"
    f" {'of redis':>9} {'node cpu %':>12} {'gen cpu %':>9} {'gen lag p99':>11} {'host %':>6}"
    f" {'converged':>9}"
)


def figure(runs: Sequence[dict[str, Any]], key: str) -> float:
    return med([num(r[key]) for r in runs])


def report_propagation(results: dict[str, list[dict[str, Any]]], load: Load) -> None:
    print(
        f"\npart 1+2, propagation: {load.clients} clients on each of {load.docs} documents,"
        f" {load.rate} edits/s each, {load.duration} s measured;"
        f" {len(next(iter(results.values())))} round(s)"
    )
    print(HEADER)
    for name, runs in results.items():
        for number, r in enumerate(runs, 1):
            print(row(f"{name} #{number}", r))
    print(
        "p50/p99: edit to every other client of its document (a lost edit as infinite);"
        " cpu ms/edit: all nodes' and redis-server's CPU over the window / its edits; node"
        f" cpu %: each node's CPU over the window (100 = a core). * generator over"
        f" {GEN_CPU_LIMIT:.0f}% cpu or {GEN_DELAY_LIMIT_MS:.0f} ms lag, or the machine over"
        f" {HOST_BUSY_LIMIT:.0f}% busy; ! the generator itself was held up over"
        f" {STALL_MS:.0f} ms (a machine stall): such a round is left out of the ratios below"
        " when the setup has a round without one."
    )

    def compare(ours: str, anchor: str, goals: bool) -> None:
        if ours not in results or anchor not in results:
            return
        pairs = list(zip(results[ours], results[anchor], strict=True))
        clean = [(a, b) for a, b in pairs if not stalled(a) and not stalled(b)]
        if clean:
            pairs = clean
        else:
            clean_a = [a for a in results[ours] if not stalled(a)] or results[ours]
            clean_b = [b for b in results[anchor] if not stalled(b)] or results[anchor]
            pairs = list(zip(clean_a, clean_b, strict=False))
        p99_diff = med([num(a["p99_ms"]) - num(b["p99_ms"]) for a, b in pairs])
        p99_ratio = med([ratio(num(a["p99_ms"]), num(b["p99_ms"])) for a, b in pairs])
        p50_ratio = med([ratio(num(a["p50_ms"]), num(b["p50_ms"])) for a, b in pairs])
        cpu = med([ratio(a["cpu_ms_per_edit"], b["cpu_ms_per_edit"]) for a, b in pairs])
        line = (
            f"{ours} vs {anchor}: p99 {fmt(p99_diff, 0, 2)} ms more"
            f" (x{fmt(p99_ratio, 0, 2)}), p50 x{fmt(p50_ratio, 0, 2)},"
            f" cpu per edit x{fmt(cpu, 0, 2)} [{len(pairs)} round(s)]"
        )
        if goals:
            p99_ok = "met" if p99_diff <= P99_GOAL_MS else "NOT met"
            cpu_ok = "met" if cpu <= CPU_GOAL else "NOT met"
            line += (
                f"  [goal p99 within {P99_GOAL_MS:.0f} ms: {p99_ok};"
                f" cpu at most {CPU_GOAL}x: {cpu_ok}]"
            )
        print(line)

    for many in ("ours-redis-x2", "ours-redis-x3", "ours-redis-x2-bydoc"):
        compare(many, "ours-redis", True)
        compare(many, "ours", True)
    compare("ours-redis", "ours", False)
    compare("hocuspocus-redis-x2", "hocuspocus-redis", False)
    compare("hocuspocus-redis-x2", "hocuspocus", False)
    compare("ours", "hocuspocus", False)
    compare("ours-redis", "hocuspocus-redis", False)
    compare("ours-redis-x2", "hocuspocus-redis-x2", False)


async def propagation(
    args: argparse.Namespace, tmp: Path, load: Load
) -> dict[str, list[dict[str, Any]]]:
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in args.setups}
    for number in range(args.rounds):
        for name in in_order(args.setups, number):
            setup = SETUPS[name]
            async with running(setup, tmp / f"p-{name}-{number + 1}") as cluster:
                result = await measure(setup, cluster, load)
            result.update(part="propagation", setup=name, round=number + 1)
            results[name].append(result)
            print(json.dumps(result), flush=True)
    return results


async def ramp(args: argparse.Namespace, tmp: Path) -> dict[str, list[dict[str, Any]]]:
    """Each setup of ``--ramp-setups`` over ``--ramp-docs`` (see ``ramp_one``)."""
    return {name: await ramp_one(name, args, tmp) for name in args.ramp_setups}


async def ramp_one(name: str, args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    """The steps of ``--ramp-docs`` until p99 passes the limit, then ``--ramp-refine`` steps
    halfway between the last step held and the first one not; the steps by documents."""
    setup = SETUPS[name]
    steps: list[dict[str, Any]] = []

    async def step(docs: int, again: bool = True) -> bool:
        """Run one step; whether it held (p99 under the limit, nothing lost). A step that did
        not hold runs ``again``, once: one p99 over a few seconds rests on a few edits, which a
        single hiccup of a shared machine delays; the ramp ends where both tries fail."""
        load = Load(
            clients=2,
            docs=docs,
            rate=args.ramp_rate,
            duration=args.ramp_duration,
            warmup=args.warmup,
            drain=args.drain,
            workers=args.ramp_workers,
        )
        async with running(setup, tmp / f"r-{name}-{docs}-{again}") as cluster:
            result = await measure(setup, cluster, load)
        result.update(part="ramp", setup=name, retry=not again)
        print(json.dumps(result), flush=True)
        steps.append(result)
        if again and not held(result, args.ramp_limit):
            return await step(docs, again=False)
        return held(result, args.ramp_limit)

    low = 0
    for docs in args.ramp_docs:
        if not await step(docs):
            high = docs
            for _ in range(args.ramp_refine):
                middle = (low + high) // 2
                if middle in (low, high):
                    break
                if await step(middle):
                    low = middle
                else:
                    high = middle
            break
        low = docs
    return sorted(steps, key=lambda r: (int(r["docs"]), bool(r.get("retry"))))


def held(result: dict[str, Any], limit: float) -> bool:
    return num(result["p99_ms"]) <= limit and not result["lost"]


def report_ramp(out: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> None:
    print(
        f"\npart 3, capacity: documents with 2 clients each, {args.ramp_rate} edits/s each,"
        f" {args.ramp_duration} s a step; a ramp stops once p99 passes {args.ramp_limit} ms"
        f" (then {args.ramp_refine} step(s) halfway between the last held and the first not)"
    )
    print(f"{'docs':>5} " + HEADER)
    most: dict[str, int] = {}
    for name, steps in out.items():
        for r in steps:
            print(f"{r['docs']:>5} " + row(name + (" (again)" if r.get("retry") else ""), r))
        most[name] = max((r["docs"] for r in steps if held(r, args.ramp_limit)), default=0)
        failed = [r for r in steps if not held(r, args.ramp_limit) and r["docs"] > most[name]]
        beyond = (
            f", {failed[0]['docs']} did not (p99 {fmt(num(failed[0]['p99_ms']), 0, 1)} ms)"
            if failed
            else " (the last step; the limit was not reached)"
        )
        print(f"{name}: held {most[name]} documents under p99 {args.ramp_limit} ms{beyond}")
    first = args.ramp_setups[0]
    for name, docs in most.items():
        if name != first and most.get(first):
            print(f"{name} vs {first}: x{docs / most[first]:.2f} the documents held")


def names(spec: str) -> list[str]:
    out = [s.strip() for s in spec.split(",") if s.strip() and s.strip() != "none"]
    for name in out:
        if name not in SETUPS:
            sys.exit(f"unknown setup {name!r}: one of {', '.join(SETUPS)}")
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=6, help="clients per document")
    parser.add_argument("--docs", type=int, default=5, help="documents")
    parser.add_argument("--rate", type=float, default=4, help="edits per second per client")
    parser.add_argument("--duration", type=float, default=10, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--drain", type=float, default=10)
    parser.add_argument("--workers", type=int, default=1, help="generator threads")
    parser.add_argument(
        "--rounds", type=int, default=2, help="runs of each setup of part 1 and 2 (medians)"
    )
    parser.add_argument("--setups", type=names, default=DEFAULT_SETUPS, help="part 1 and 2")
    parser.add_argument(
        "--ramp-docs",
        type=lambda s: [int(x) for x in s.split(",") if x.strip() and x.strip() != "none"],
        default=[25, 50, 100, 200, 400, 800],
        help="the documents of each step of part 3 ('none': no part 3)",
    )
    parser.add_argument("--ramp-setups", type=names, default=DEFAULT_RAMP)
    parser.add_argument("--ramp-rate", type=float, default=2)
    parser.add_argument("--ramp-duration", type=float, default=5)
    parser.add_argument("--ramp-limit", type=float, default=50.0, help="p99 ms")
    parser.add_argument("--ramp-workers", type=int, default=2, help="generator threads")
    parser.add_argument(
        "--ramp-refine", type=int, default=1, help="steps halfway, once the limit is passed"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    require_tools([SETUPS[n] for n in [*args.setups, *args.ramp_setups]])
    load = Load(
        clients=args.clients,
        docs=args.docs,
        rate=args.rate,
        duration=args.duration,
        warmup=args.warmup,
        drain=args.drain,
        workers=args.workers,
    )
    started = time.monotonic()
    cores = psutil.cpu_count() or 1
    print(f"machine: {cores} cores (shared with whatever else runs on it)", flush=True)
    with tempfile.TemporaryDirectory(prefix="cluster-fanout-") as tmp:
        results = await propagation(args, Path(tmp), load) if args.setups else {}
        capacity = await ramp(args, Path(tmp)) if args.ramp_docs and args.ramp_setups else {}
    if results:
        report_propagation(results, load)
    if capacity:
        report_ramp(capacity, args)
    print(f"\n{time.monotonic() - started:.0f} s in all, on {cores} cores")
    if args.json:
        args.json.write_text(json.dumps({"propagation": results, "ramp": capacity}, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
