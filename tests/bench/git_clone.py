"""Clone benchmark: ``git clone`` through the engine's git bridge against ``git http-backend``.

One repository (``--files`` files about 100 to a directory, ``--commits`` commits each changing
three files, then ``git gc``, as a server's repository is kept) is served two ways at once:

- ours: ``collab serve`` (dev mode, its own process), the bridge at ``/git/<repo>.git``;
- git: ``git http-backend``, git's CGI program, run per request by a small aiohttp CGI adapter
  (its own process), which streams the request in and the answer out, as a web server's CGI
  support would.

Each is reached through a counting TCP proxy in this process, which measures the bytes the
server sent (HTTP headers included). Each run clones with the git CLI (``--bare``, protocol
``--protocol``, v2 by default) from both, in an order that alternates from run to run; each
clone is checked (``git fsck``). The first clone from each server is reported apart (ours is
cold then: the reachable set and pack indexes are read for the first time, from git's
reachability bitmaps unless ``--no-bitmaps``, which makes both servers walk the history).
Prints the medians of the other runs and the ratios ours/git (at most 1.5 is the goal for time
and bytes). Not a pass/fail test.

Usage: .venv/bin/python tests/bench/git_clone.py [--files 10000] [--commits 1000] [--runs 11]
       [--protocol 2] [--filter blob:none] [--no-bitmaps]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GIT_ENV = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
    "HOME": "/nonexistent",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_TERMINAL_PROMPT": "0",
    "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
}


def file_path(i: int) -> str:
    return f"d{i // 10_000:02d}/s{i // 100 % 100:02d}/f{i % 100:02d}.txt"


def content(i: int, version: int, seed: int) -> bytes:
    rng = random.Random(i * 7919 + seed)
    words = [f"{rng.getrandbits(32):08x}" for _ in range(24)]
    return f"file {i} version {version}\n".encode() + " ".join(words).encode() + b"\n"


def build(path: Path, files: int, commits: int, bitmaps: bool = True) -> None:
    """A bare repository of ``files`` files and ``commits`` commits, packed by ``git gc``
    (which writes reachability bitmaps in a bare repository, unless not ``bitmaps``)."""
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(path)], check=True)
    rng = random.Random(1)
    chunks = []
    for i in range(files):
        data = content(i, 0, 0)
        chunks.append(b"blob\nmark :%d\ndata %d\n%s\n" % (i + 1, len(data), data))
    when = 1_600_000_000
    chunks.append(b"commit refs/heads/main\ncommitter bench <b@x> %d +0000\n" % when)
    chunks.append(b"data 5\ninit\n")
    chunks += [b"M 100644 :%d %s\n" % (i + 1, file_path(i).encode()) for i in range(files)]
    versions: dict[int, int] = {}
    for c in range(1, commits):
        when += 60
        chunks.append(b"commit refs/heads/main\ncommitter bench <b@x> %d +0000\n" % when)
        chunks.append(b"data 10\nchange %03d\n" % (c % 1000))
        for i in rng.sample(range(files), 3):
            versions[i] = versions.get(i, 0) + 1
            data = content(i, 0, 0) + b"edit %d in commit %d\n" % (versions[i], c)
            chunks.append(
                b"M 100644 inline %s\ndata %d\n%s\n" % (file_path(i).encode(), len(data), data)
            )
    env = dict(GIT_ENV)
    subprocess.run(
        ["git", "-C", str(path), "fast-import", "--quiet"],
        input=b"".join(chunks),
        env=env,
        check=True,
    )
    no_bitmaps = [] if bitmaps else ["-c", "repack.writeBitmaps=false"]
    subprocess.run(["git", "-C", str(path), *no_bitmaps, "gc", "-q"], env=env, check=True)
    # (git's upload-pack refuses filters unless allowed; the bridge always takes them)
    subprocess.run(["git", "-C", str(path), "config", "uploadpack.allowFilter", "true"], check=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- git http-backend behind a CGI adapter (run as a child: --cgi ROOT PORT) ---------------


def serve_cgi(root: str, port: int) -> None:
    from aiohttp import web

    async def handle(request: web.Request) -> web.StreamResponse:
        env = {
            "PATH": GIT_ENV["PATH"],
            "HOME": "/nonexistent",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_PROJECT_ROOT": root,
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": request.method,
            "PATH_INFO": "/" + request.match_info["tail"],
            "QUERY_STRING": request.query_string,
            "CONTENT_TYPE": request.headers.get("Content-Type", ""),
            "REMOTE_ADDR": request.remote or "127.0.0.1",
        }
        if "Git-Protocol" in request.headers:
            env["GIT_PROTOCOL"] = request.headers["Git-Protocol"]
        if "Content-Encoding" in request.headers:
            env["HTTP_CONTENT_ENCODING"] = request.headers["Content-Encoding"]
        body = await request.read()
        env["CONTENT_LENGTH"] = str(len(body))
        proc = await asyncio.create_subprocess_exec(
            "git",
            "http-backend",
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdin is not None and proc.stdout is not None

        async def feed() -> None:
            assert proc.stdin is not None
            with contextlib.suppress(ConnectionError, BrokenPipeError):
                proc.stdin.write(body)
                await proc.stdin.drain()
                proc.stdin.close()

        feeder = asyncio.create_task(feed())
        status, headers = 200, {}
        while line := (await proc.stdout.readline()).rstrip(b"\r\n"):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            else:
                headers[name] = value.strip()
        response = web.StreamResponse(status=status, headers=headers)
        await response.prepare(request)
        while chunk := await proc.stdout.read(1 << 16):
            await response.write(chunk)
        await feeder
        await proc.wait()
        await response.write_eof()
        return response

    app = web.Application(client_max_size=1 << 30)
    app.router.add_route("*", "/git/{tail:.*}", handle)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# -- a counting proxy -------------------------------------------------------------------------


class Proxy:
    """Forwards 127.0.0.1:``port`` to ``target``, counting the bytes the target sends."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = free_port()
        self.sent = 0
        self.server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", self.port)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, count: bool) -> None:
            try:
                while data := await src.read(1 << 16):
                    if count:
                        self.sent += len(data)
                    dst.write(data)
                    await dst.drain()
            except ConnectionError:
                pass
            finally:
                with contextlib.suppress(Exception):
                    dst.close()

        await asyncio.gather(pipe(reader, up_writer, False), pipe(up_reader, writer, True))

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return


async def clone(url: str, into: Path, protocol: str, spec: str | None) -> float:
    args = ["git", "-c", f"protocol.version={protocol}", "clone", "-q", "--bare"]
    if spec:
        args.append(f"--filter={spec}")
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(*args, url, str(into), env=GIT_ENV)
    if await proc.wait() != 0:
        raise RuntimeError(f"git clone {url} failed")
    elapsed = time.perf_counter() - started
    fsck = ["git", "-C", str(into), "fsck", "--connectivity-only", "--no-progress"]
    subprocess.run(fsck, env=GIT_ENV, check=not spec, capture_output=True)
    return elapsed


async def bench(args: argparse.Namespace, work: Path) -> None:
    root = work / "repos"
    root.mkdir()
    started = time.perf_counter()
    build(root / "big.git", args.files, args.commits, not args.no_bitmaps)
    objects = subprocess.run(
        ["git", "-C", str(root / "big.git"), "count-objects", "-v"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    print(
        f"built {args.files} files, {args.commits} commits in {time.perf_counter() - started:.1f} s"
    )
    print(
        "  "
        + ", ".join(
            line for line in objects.splitlines() if line.startswith(("in-pack", "size-pack"))
        )
    )

    ours_port, git_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k != "COLLAB_SECRET"}
    ours = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "collab",
            "serve",
            "--repos",
            str(root),
            "--data-dir",
            str(work / "data"),
            "--port",
            str(ours_port),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    cgi = subprocess.Popen(
        [sys.executable, __file__, "--cgi", str(root), str(git_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    proxies = {"ours": Proxy(ours_port), "git": Proxy(git_port)}
    try:
        await wait_for_port(ours_port)
        await wait_for_port(git_port)
        for proxy in proxies.values():
            await proxy.start()
        urls = {
            "ours": f"http://bench:x@127.0.0.1:{proxies['ours'].port}/git/big.git",
            "git": f"http://127.0.0.1:{proxies['git'].port}/git/big.git",
        }
        times: dict[str, list[float]] = {"ours": [], "git": []}
        sent: dict[str, list[int]] = {"ours": [], "git": []}
        for run in range(args.runs):
            order = ["ours", "git"] if run % 2 == 0 else ["git", "ours"]
            for name in order:
                target = work / f"clone-{name}-{run}.git"
                proxies[name].sent = 0
                times[name].append(await clone(urls[name], target, args.protocol, args.filter))
                sent[name].append(proxies[name].sent)
                shutil.rmtree(target)
        report(times, sent, args)
    finally:
        for proxy in proxies.values():
            await proxy.stop()
        for proc in (ours, cgi):
            proc.send_signal(signal.SIGINT)
        for proc in (ours, cgi):
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def report(
    times: dict[str, list[float]], sent: dict[str, list[int]], args: argparse.Namespace
) -> None:
    what = f"git clone --bare (protocol v{args.protocol}{', --filter=' + args.filter if args.filter else ''})"
    print(f"\n{what}, {args.runs} runs each, alternating; bytes are what each server sent")
    for name in ("ours", "git"):
        print(f"  {name:5} first: {times[name][0] * 1000:7.1f} ms {sent[name][0]:>11,} bytes")
    medians = {}
    for name in ("ours", "git"):
        rest_t, rest_b = times[name][1:] or times[name], sent[name][1:] or sent[name]
        medians[name] = (statistics.median(rest_t), statistics.median(rest_b))
        print(
            f"  {name:5} median of runs 2..{args.runs}: {medians[name][0] * 1000:7.1f} ms "
            f"{int(medians[name][1]):>11,} bytes (time min {min(rest_t) * 1000:.1f}, max {max(rest_t) * 1000:.1f})"
        )
    time_ratio = medians["ours"][0] / medians["git"][0]
    byte_ratio = medians["ours"][1] / medians["git"][1]
    first_ratio = times["ours"][0] / times["git"][0]
    print(
        f"  ratio ours/git: time {time_ratio:.2f}x, bytes {byte_ratio:.2f}x (first clone: time {first_ratio:.2f}x); goal at most 1.5x"
    )


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--cgi":
        serve_cgi(sys.argv[2], int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--commits", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=11)
    parser.add_argument("--protocol", default="2", choices=["0", "1", "2"])
    parser.add_argument("--filter", default=None, help="a partial clone's filter, e.g. blob:none")
    parser.add_argument(
        "--no-bitmaps",
        action="store_true",
        help="pack without reachability bitmaps (as a repository the engine wrote: both walk)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="git-clone-bench-") as tmp:
        asyncio.run(bench(args, Path(tmp)))


if __name__ == "__main__":
    main()
