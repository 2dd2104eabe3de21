"""Working-tree sync benchmark: ``collab sync`` between files on disk and live documents.

A real server (``collab serve``, dev mode) and a real syncer (``collab sync --json``) run as
child processes; two ``/ws`` clients in this process stand for the people typing elsewhere.

- save -> clients: a file is saved (written in place) with one more line; timed until both
  remote clients hold it. Goal: p50 under 50 ms, p99 under 150 ms.
- keystroke -> file: a remote client types one line; timed until the file on disk holds it.
  The syncer gathers live edits for ``--debounce`` seconds before it writes (reported); the
  goal is p50 under 50 ms and p99 under 150 ms beyond it.
- anchor: the same keystroke from one remote client to the other, with no disk in between
  (the engine's own fan-out, measured in the same run); the ratios say what the disk adds.
- a tree of ``--files`` files (100 per directory): the time to adopt it (clone, record the
  bases, ready), against a plain ``git clone`` of the same branch through the same bridge
  (the anchor); then the syncer's CPU and memory while it watches the idle tree for
  ``--idle`` seconds, beside the server's own over the same window.

Prints figures and ratios; not a pass/fail test.

Usage: .venv/bin/python tests/bench/disk_sync.py [--samples 200] [--files 10000]
       [--debounce 0.02] [--idle 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from collab import Client  # noqa: E402
from collab.client import Document  # noqa: E402
from gitsync import create_demo_repo  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def row(name: str, values: list[float], anchor: list[float] | None = None) -> str:
    p50, p99 = statistics.median(values) * 1000, percentile(values, 0.99) * 1000
    text = f"{name:<28} p50 {p50:7.1f} ms   p99 {p99:7.1f} ms"
    if anchor:
        a50, a99 = statistics.median(anchor) * 1000, percentile(anchor, 0.99) * 1000
        text += f"   ({p50 / a50:5.1f}x / {p99 / a99:5.1f}x the anchor)"
    return text


async def start_server(repos: Path, data: Path) -> tuple[asyncio.subprocess.Process, str]:
    port = free_port()
    server = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "collab", "serve", "--repos", str(repos)],
        *["--data-dir", str(data), "--port", str(port), "--log-level", "WARNING"],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env=ENV,
    )
    assert server.stdout is not None
    while b"listening on" not in await server.stdout.readline():
        pass
    return server, f"ws://127.0.0.1:{port}"


async def start_syncer(
    root: Path, url: str, repo: str, debounce: float
) -> tuple[asyncio.subprocess.Process, float]:
    """A ``collab sync`` child; returns it once ready, and how long that took."""
    started = time.perf_counter()
    syncer = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "collab", "sync", str(root), "--url", url, "--repo", repo],
        *["--branch", "main", "--user", "alice", "--json", "--debounce", str(debounce)],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env=ENV,
    )
    assert syncer.stdout is not None
    while True:
        line = await syncer.stdout.readline()
        if not line:
            raise RuntimeError("collab sync exited before it was ready")
        if json.loads(line)["event"] == "ready":
            break
    elapsed = time.perf_counter() - started

    async def drain() -> None:
        assert syncer.stdout is not None
        while await syncer.stdout.readline():
            pass

    syncer._drain = asyncio.create_task(drain())  # type: ignore[attr-defined]
    return syncer, elapsed


async def stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.terminate()
        await process.wait()


async def wait_in(doc: Document, marker: str) -> None:
    await doc.wait_for(lambda text: marker in text, timeout=10)


async def latencies(url: str, root: Path, samples: int) -> dict[str, list[float]]:
    path = root / "bench.txt"
    path.write_text("start\n")
    found: dict[str, list[float]] = {"anchor": [], "save": [], "keystroke": []}
    async with Client(url, user="bob") as bob, Client(url, user="carol") as carol:
        b_doc = await bob.open("demo/main:bench.txt")
        c_doc = await carol.open("demo/main:bench.txt")
        await asyncio.gather(wait_in(b_doc, "start"), wait_in(c_doc, "start"))
        for n in range(samples):
            marker = f"anchor {n}\n"
            started = time.perf_counter()
            b_doc.insert(len(str(b_doc.text)), marker)
            await wait_in(c_doc, marker)
            found["anchor"].append(time.perf_counter() - started)
            await asyncio.sleep(0.03)

            marker = f"saved {n}\n"
            text = path.read_text()
            started = time.perf_counter()
            with open(path, "r+") as handle:  # an editor saving in place
                handle.truncate(0)
                handle.write(text + marker)
            await asyncio.gather(wait_in(b_doc, marker), wait_in(c_doc, marker))
            found["save"].append(time.perf_counter() - started)
            await asyncio.sleep(0.03)

            marker = f"typed {n}\n"
            started = time.perf_counter()
            b_doc.insert(len(str(b_doc.text)), marker)
            async with asyncio.timeout(10):
                while marker not in path.read_text():
                    await asyncio.sleep(0.0005)
            found["keystroke"].append(time.perf_counter() - started)
            await asyncio.sleep(0.03)
    return found


def wide_tree(count: int) -> dict[str, str]:
    return {
        f"pkg{n // 100:03d}/mod{n % 100:02d}.py": f"# module {n}\nVALUE = {n}\n"
        for n in range(count)
    }


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--files", type=int, default=10000)
    parser.add_argument("--debounce", type=float, default=0.02)
    parser.add_argument("--idle", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="collab-disk-bench-") as scratch:
        tmp = Path(scratch)
        create_demo_repo(tmp / "repos" / "demo", {"README.md": "# bench\n"})
        built = time.perf_counter()
        create_demo_repo(tmp / "repos" / "wide", wide_tree(args.files))
        print(f"built a {args.files}-file repository in {time.perf_counter() - built:.1f} s")
        server, url = await start_server(tmp / "repos", tmp / "data")
        try:
            syncer, _ready = await start_syncer(tmp / "demo", url, "demo", args.debounce)
            try:
                found = await latencies(url, tmp / "demo", args.samples)
            finally:
                await stop(syncer)
            print(f"{args.samples} samples each; debounce {args.debounce * 1000:.0f} ms")
            print(row("anchor: client -> client", found["anchor"]))
            print(row("save -> both clients", found["save"], found["anchor"]))
            print(row("keystroke -> file", found["keystroke"], found["anchor"]))
            beyond = [value - args.debounce for value in found["keystroke"]]
            print(row("keystroke -> file - debounce", beyond))

            http = url.replace("ws://", "http://alice:dev@") + "/git/wide.git"
            started = time.perf_counter()
            subprocess.run(["git", "clone", "-q", http, str(tmp / "plain")], check=True, env=ENV)
            cloned = time.perf_counter() - started
            syncer, adopted = await start_syncer(tmp / "wide", url, "wide", args.debounce)
            try:
                watched = psutil.Process(syncer.pid)
                serving = psutil.Process(server.pid)
                await asyncio.sleep(1.0)
                cpu0, server0 = cpu_seconds(watched), cpu_seconds(serving)
                await asyncio.sleep(args.idle)
                cpu = (cpu_seconds(watched) - cpu0) / args.idle
                server_cpu = (cpu_seconds(serving) - server0) / args.idle
                rss = watched.memory_info().rss / 2**20
                server_rss = serving.memory_info().rss / 2**20
            finally:
                await stop(syncer)
            print(
                f"adopt {args.files} files: {adopted:.2f} s; anchor git clone {cloned:.2f} s "
                f"({adopted / cloned:.1f}x)"
            )
            print(
                f"idle watching {args.files} files for {args.idle:.0f} s: syncer CPU "
                f"{cpu * 100:.2f}% of a core, RSS {rss:.0f} MiB; server (anchor) CPU "
                f"{server_cpu * 100:.2f}%, RSS {server_rss:.0f} MiB"
            )
        finally:
            await stop(server)


if __name__ == "__main__":
    asyncio.run(main())
