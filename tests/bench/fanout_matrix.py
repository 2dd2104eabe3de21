"""Fan-out matrices: ours against three anchors, over fan-out and over the number of documents.

Two matrices, each cell a load of stock y-websocket clients (``fanout_load.mjs``, Node.js)
against every server in turn, in one run (see ``fanout.py`` for how each cell is measured):

- over fan-out: N clients (2, 5, 10, 20, 50, 200) on one document that takes ``--doc-rate``
  edits per second in all (each client types doc-rate / N edits per second; ``--rate`` sets a
  rate per client instead). A fixed rate of edits keeps the cells comparable: what grows with
  N is the fan-out (every edit goes to N - 1 clients), and the generator's own work (one
  integration per delivery, in stock Yjs) stays within one core;
- over documents: D documents (10, 50, 200, 500, 1,000) with ``--docs-clients`` (2) stock
  clients each, each typing ``--docs-rate`` (2) edits per second;
- then the memory of 1,000 idle open documents and of 1,000 idle connections to one document,
  each on a fresh server process (``--idle``).

Servers: ours (``collab serve``: SQLite store, uvloop); reference (``y-websocket@1.5.4``
``bin/server.js``, in memory); reference-leveldb (the same with ``YPERSISTENCE``: LevelDB);
pycrdt (pycrdt-websocket on uvloop, like ours; ``pycrdt-asyncio`` runs it on asyncio's own
loop). Every client is its own user.

Per cell and server: p50 and p99 latency (an edit is delivered when every other client of its
document has integrated it; a lost edit counts as infinite, and a percentile that lands on one
reads ``inf``), server CPU per edit over the measured window (and from its start until every
edit was delivered: well above, the server fell behind), lost edits; then the ratios
ours/anchor of each. The load generator's CPU over the window, its event-loop lag and the
machine's busy share are printed with each cell, and a cell where the generator (or the
machine) was saturated is marked ``*``: its latencies measure the generator, not the server.

Within a round the servers run in turn, each on a fresh process and repository, in an order
reversed from one cell to the next and from one round to the next. With ``--rounds N`` the
figures are the medians of the rounds (ratios: the medians of the rounds' ratios).

Each server's run of a cell takes about the measured time plus 6 s (start, connect, warm-up,
drain), on 2 cores. A quick run (about 4 minutes):
  .venv/bin/python tests/bench/fanout_matrix.py --fanouts 2,20,200 --doc-counts 10,1000 \\
      --duration 5 --idle 0
The full run, every cell and server twice (about 15 minutes at 6 s a cell, 25 at 10 s; more
rounds and longer cells steady the p99s, which rest on a few hundred edits a cell):
  .venv/bin/python tests/bench/fanout_matrix.py --rounds 2 --duration 10 --json matrix.json

Not a pass/fail test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fanout import (
    ANCHORS,
    GEN_CPU_LIMIT,
    GEN_DELAY_LIMIT_MS,
    HOST_BUSY_LIMIT,
    ROOT,
    Load,
    fanout,
    fmt,
    generator_saturated,
    idle_on_fresh_server,
    in_order,
    loop_of,
    med,
    num,
    prepare_repo,
    ratio,
    running_server,
)

Cell = tuple[str, int, Load]  # (matrix, clients or documents, load)


CLIENTS_PER_THREAD = 100
"""With ``--workers auto``, a generator thread per this many clients of one document (up to
the machine's cores): a thread integrates every edit once per client it hosts, one after the
other, so at 200 clients one thread would add its own ~15 ms to every edit's latency."""


def workers(spec: str, clients: int) -> int:
    if spec != "auto":
        return int(spec)
    return max(1, min(os.cpu_count() or 1, math.ceil(clients / CLIENTS_PER_THREAD)))


def cells(args: argparse.Namespace) -> list[Cell]:
    out: list[Cell] = []
    common = {"duration": args.duration, "warmup": args.warmup, "drain": args.drain}
    for n in ints(args.fanouts):
        rate = args.rate if args.rate is not None else args.doc_rate / n
        load = Load(clients=n, rate=round(rate, 4), workers=workers(args.workers, n), **common)
        out.append(("fanout", n, load))
    for d in ints(args.doc_counts):
        load = Load(
            clients=args.docs_clients,
            docs=d,
            rate=args.docs_rate,
            workers=workers(args.workers, args.docs_clients),
            **common,
        )
        out.append(("docs", d, load))
    return out


def ints(spec: str) -> list[int]:
    return [int(x) for x in spec.split(",") if x.strip() and x.strip() != "none"]


async def run(args: argparse.Namespace, servers: list[str]) -> dict[str, Any]:
    results: dict[str, dict[int, dict[str, list[dict[str, Any]]]]] = {"fanout": {}, "docs": {}}
    idle: dict[str, dict[str, float]] = {}
    plan = cells(args)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fanout-matrix-") as tmp:
        turn = 0
        for number in range(args.rounds):
            for matrix, size, load in plan:
                for kind in in_order(servers, turn):
                    work = Path(tmp) / f"{matrix}{size}-{kind}-{number + 1}"
                    prepare_repo(work)
                    tree = args.ours_tree if kind.startswith("ours") else ROOT
                    async with running_server(kind, work, None, tree) as port:
                        result = await fanout(kind, port, load, work)
                    result.update(matrix=matrix, size=size, round=number + 1)
                    cell = results[matrix].setdefault(size, {})
                    cell.setdefault(kind, []).append(result)
                    print(json.dumps(result), flush=True)
                turn += 1
        if args.idle:
            for kind in servers:
                work = Path(tmp) / f"idle-{kind}"
                prepare_repo(work)
                tree = args.ours_tree if kind.startswith("ours") else ROOT
                idle[kind] = {
                    key: await idle_on_fresh_server(
                        kind, work, None, tree, args.idle, distinct_docs=distinct
                    )
                    for key, distinct in (("docs_mb", True), ("conns_mb", False))
                }
                print(json.dumps({"idle": kind, **idle[kind]}), flush=True)
    return {
        "results": results,
        "idle": idle,
        "wall_s": round(time.monotonic() - started, 1),
        "args": {k: str(v) for k, v in vars(args).items()},
    }


def report(data: dict[str, Any], args: argparse.Namespace, servers: list[str]) -> None:
    results = data["results"]
    print(
        f"\n{args.rounds} round(s), {args.duration} s measured per cell, {data['wall_s']} s in all"
    )
    print("event loops: " + "; ".join(f"{kind}: {loop_of(kind)}" for kind in servers))
    titles = {
        "fanout": (
            "clients",
            f"fan-out: N clients on one document, {args.doc_rate:g} edits/s on it in all"
            if args.rate is None
            else f"fan-out: N clients on one document, {args.rate:g} edits/s each",
        ),
        "docs": (
            "docs",
            f"documents: D documents, {args.docs_clients} clients each,"
            f" {args.docs_rate:g} edits/s each",
        ),
    }
    threads = {
        f"{matrix} {size}: {load.workers}" for matrix, size, load in cells(args) if load.workers > 1
    }
    if threads:
        print("generator threads: " + ", ".join(sorted(threads)) + " (else 1)")
    ours = [k for k in servers if k.startswith("ours")]
    anchors = [k for k in servers if not k.startswith("ours")]
    for matrix, (unit, title) in titles.items():
        if not results[matrix]:
            continue
        print(f"\n{title}")
        print(
            f"| {unit:>7} | {'server':<18} | {'edits/s':>7} | {'p50 ms':>8} | {'p99 ms':>8} |"
            f" {'cpu ms/edit':>11} | {'to drain':>8} | {'lost/edits':>11} | {'gen cpu %':>9} |"
            f" {'gen lag p99/max ms':>18} | {'host %':>6} | {'peak MB':>7} |"
        )
        print("|" + "|".join("-" * w for w in (9, 20, 9, 10, 10, 13, 10, 13, 11, 20, 8, 9)) + "|")
        for size, cell in sorted(results[matrix].items()):
            for kind in servers:
                runs = cell.get(kind, [])
                if not runs:
                    continue
                mark = "*" if any(saturated(r) for r in runs) else " "
                edits = sum(int(r["edits_sent"]) for r in runs)
                lost = sum(int(r["lost"]) for r in runs)
                rate = med([r["edits_sent"] / r["duration"] for r in runs])
                lag = (
                    f"{med([r['gen_loop_delay_p99_ms'] for r in runs]):.1f}/"
                    f"{max(r['gen_loop_delay_max_ms'] for r in runs):.1f}"
                )
                print(
                    f"| {size:>7} | {kind + mark:<18} | {rate:>7.0f} |"
                    f" {fmt(med([num(r['p50_ms']) for r in runs]), 8, 2)} |"
                    f" {fmt(med([num(r['p99_ms']) for r in runs]), 8, 2)} |"
                    f" {fmt(med([r['cpu_ms_per_edit'] for r in runs]), 11, 4)} |"
                    f" {fmt(med([r['cpu_ms_per_edit_to_drain'] for r in runs]), 8, 4)} |"
                    f" {f'{lost}/{edits}':>11} |"
                    f" {fmt(med([r['gen_cpu_window_pct'] for r in runs]), 9)} |"
                    f" {lag:>18} | {fmt(med([r['host_busy_pct'] for r in runs]), 6)} |"
                    f" {fmt(max(r['peak_rss_mb'] for r in runs), 7)} |"
                )
        for kind in ours:
            print(f"\nratios {kind}/anchor ({matrix}; median of rounds; < 1: ours is better)")
            head = "".join(f" {a + ' p50/p99/cpu':>34} |" for a in anchors)
            print(f"| {unit:>7} |{head}")
            print("|" + "-" * 9 + "|" + "|".join("-" * 36 for _ in anchors) + "|")
            for size, cell in sorted(results[matrix].items()):
                row = []
                for anchor in anchors:
                    pairs = list(zip(cell.get(kind, []), cell.get(anchor, []), strict=False))
                    figures = [
                        med([ratio(num(a[key]), num(b[key])) for a, b in pairs])
                        for key in ("p50_ms", "p99_ms", "cpu_ms_per_edit")
                    ]
                    row.append(" / ".join(fmt(f, 0, 2) for f in figures))
                print(f"| {size:>7} |" + "".join(f" {cellv:>34} |" for cellv in row))
    if data["idle"]:
        print(f"\nidle memory (RSS growth, MiB), {args.idle} idle, each on a fresh server")
        print(f"| {'server':<17} | {'documents':>9} | {'connections':>11} |")
        print("|" + "-" * 19 + "|" + "-" * 11 + "|" + "-" * 13 + "|")
        for kind, figures in data["idle"].items():
            print(f"| {kind:<17} | {figures['docs_mb']:>9.1f} | {figures['conns_mb']:>11.1f} |")
        for kind in ours:
            for anchor in anchors:
                if kind in data["idle"] and anchor in data["idle"]:
                    a, b = data["idle"][kind], data["idle"][anchor]
                    print(
                        f"ratio idle {kind}/{anchor}: documents"
                        f" {fmt(ratio(a['docs_mb'], b['docs_mb']), 0, 2)},"
                        f" connections {fmt(ratio(a['conns_mb'], b['conns_mb']), 0, 2)}"
                    )
    print(
        f"\n*: the generator or the machine was saturated in at least one round (generator cpu"
        f" > {GEN_CPU_LIMIT:.0f}% a thread, loop lag p99 > {GEN_DELAY_LIMIT_MS:.0f} ms, or over"
        f" {HOST_BUSY_LIMIT:.0f}% of the machine busy)"
    )
    unconverged = [
        f"{matrix} {size} {kind} #{r['round']}"
        for matrix, by_size in results.items()
        for size, cell in by_size.items()
        for kind, runs in cell.items()
        for r in runs
        if not r.get("converged")
    ]
    if unconverged:
        print(f"warning: the documents did not converge in {', '.join(unconverged)}")


def saturated(r: dict[str, Any]) -> bool:
    return generator_saturated(r) or float(r["host_busy_pct"]) > HOST_BUSY_LIMIT


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--fanouts", default="2,5,10,20,50,200", help="clients ('none': skip)")
    parser.add_argument("--doc-rate", type=float, default=20, help="edits/s on the document")
    parser.add_argument("--rate", type=float, default=None, help="edits/s per client instead")
    parser.add_argument(
        "--doc-counts", default="10,50,200,500,1000", help="documents ('none': skip)"
    )
    parser.add_argument("--docs-clients", type=int, default=2)
    parser.add_argument("--docs-rate", type=float, default=2, help="edits/s per client")
    parser.add_argument("--servers", default="ours,reference,reference-leveldb,pycrdt")
    parser.add_argument("--duration", type=float, default=10, help="measured seconds per cell")
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--drain", type=float, default=15)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--workers",
        default="auto",
        help="generator threads (auto: one per 100 clients of a document, up to the cores)",
    )
    parser.add_argument("--idle", type=int, default=1000, help="idle documents/connections")
    parser.add_argument("--ours-tree", type=Path, default=ROOT, help="the checkout ours runs from")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    servers = args.servers.split(",")
    for kind in servers:
        if kind != "ours" and kind not in ANCHORS:
            parser.error(f"unknown server {kind!r}: ours or one of {', '.join(ANCHORS)}")
    args.ours_tree = args.ours_tree.resolve()
    data = asyncio.run(run(args, servers))
    report(data, args, servers)
    if args.json:
        args.json.write_text(json.dumps(data, indent=2))


if __name__ == "__main__":
    main()
