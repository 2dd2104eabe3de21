"""Commit benchmark: ``gitsync.commit_changes`` against git, one changed file per commit.

For each size (files in the repository, about 100 per directory, three levels deep) one
repository is built with ``git fast-import`` and checked out. Each run changes one file, four
ways, each on its own branch:

- ours: ``commit_changes`` on a warm ``Repo`` (in process; objects fsynced as one pack, ref
  moved by compare-and-swap);
- porcelain: the change written to the worktree, then ``sh -c "git add -A && git commit"``:
  three process starts and a scan of the whole work tree (what a user types; the goal of at
  least 15x at 10,000 files is set against this one);
- plumbing: git's own commands on the same change, no work tree: ``hash-object -w``,
  ``update-index --cacheinfo`` (on an index of its own, its cache-tree primed), ``write-tree``,
  ``commit-tree``, ``update-ref NEW OLD`` (five process starts; like for like with ours but
  for the process starts, and ours must be at least as fast: 1.0x);
- fast-import: one long-running ``git fast-import`` fed the same commits, each followed by a
  ``checkpoint`` (which writes the commit's pack and moves the ref) and timed until fast-import
  reports it done: git without process starts, warm like ours.

The four alternate, in an order that rotates from run to run, so all meet the same repository
and disk, and every commit starts after ``os.sync()``: each is timed for the writes it makes
durable itself, not for flushing what another left in the page cache. Durability differs:
ours fsyncs its pack, index, directory and ref; at git's defaults (``core.fsync``: packs
only) the porcelain and plumbing fsync none of a commit's files (loose objects) and
fast-import fsyncs its pack. ``--git-durable`` runs git with ``core.fsync=all``.

Prints the median time per commit, the ratios git/ours at each size (above 1: ours is
faster), how our time grows from the smallest to the largest size, and our mean (which
includes the occasional combination of small packs, see ``gitsync.packs.write``). Not a pass/fail
test.

Usage: .venv/bin/python tests/bench/git_commit.py [--sizes 1000,10000,100000] [--runs 41]
       [--git-durable]
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from dulwich.repo import Repo  # noqa: E402

from gitsync.objects.commits import branch_heads, commit_changes, create_branch  # noqa: E402

GIT_ENV = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
    "HOME": "/nonexistent",
    "GIT_CONFIG_NOSYSTEM": "1",
    "PATH": "/usr/local/bin:/usr/bin:/bin",
}


def file_path(i: int) -> str:
    return f"d{i // 10_000:02d}/s{i // 100 % 100:02d}/f{i % 100:02d}.txt"


def content(i: int, version: int) -> bytes:
    return f"file {i} version {version}\n".encode() + b"some text on a line\n" * 8


GIT_DURABLE = ["-c", "core.fsync=all", "-c", "core.fsyncMethod=fsync"]


def git(
    repo: Path, *args: str, stdin: bytes | None = None, env: dict[str, str] | None = None
) -> bytes:
    return subprocess.run(
        ["git", "-C", str(repo), *args],
        input=stdin,
        env=env or GIT_ENV,
        check=True,
        capture_output=True,
    ).stdout


def build(path: Path, files: int) -> None:
    git(path.parent, "init", "-q", "-b", "main", str(path))
    chunks = []
    for i in range(files):
        data = content(i, 0)
        chunks.append(b"blob\nmark :%d\ndata %d\n%s\n" % (i + 1, len(data), data))
    chunks.append(b"commit refs/heads/main\ncommitter bench <bench@example.com> 0 +0000\n")
    chunks.append(b"data 5\ninit\n")
    chunks += [b"M 100644 :%d %s\n" % (i + 1, file_path(i).encode()) for i in range(files)]
    git(path, "fast-import", "--quiet", stdin=b"".join(chunks))
    git(path, "reset", "-q", "--hard", "main")
    git(path, "status", "--porcelain")  # refresh the index once, as a live worktree would be


class Plumbing:
    """Commits on branch ``plumb`` with git's plumbing, on an index of its own (no work tree):
    one process per step, as a tool that drives git would run them."""

    def __init__(self, path: Path, head: bytes, config: list[str]) -> None:
        self.path, self.head, self.config = path, head.decode(), config
        self.env = dict(GIT_ENV, GIT_INDEX_FILE=str(path / ".git" / "plumb-index"))
        git(path, "update-ref", "refs/heads/plumb", self.head, env=self.env)
        git(path, "read-tree", self.head, env=self.env)  # primes the index's cache-tree

    def run(self, *args: str, stdin: bytes | None = None) -> str:
        return git(self.path, *self.config, *args, stdin=stdin, env=self.env).decode().strip()

    def commit(self, path: str, data: bytes) -> None:
        blob = self.run("hash-object", "-w", "--stdin", stdin=data)
        self.run("update-index", "--cacheinfo", f"100644,{blob},{path}")
        tree = self.run("write-tree")
        commit = self.run("commit-tree", tree, "-p", self.head, "-m", "x")
        self.run("update-ref", "refs/heads/plumb", commit, self.head)
        self.head = commit


class FastImport:
    """Commits on branch ``fi`` through one long-running ``git fast-import``: each commit is
    followed by ``checkpoint`` (its pack written, the ref moved) and a ``progress`` line that
    fast-import prints once it has done both."""

    def __init__(self, path: Path, head: bytes, config: list[str]) -> None:
        self.proc = subprocess.Popen(
            ["git", "-C", str(path), *config, "fast-import", "--quiet"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=GIT_ENV,
        )
        self.count = 0
        self.parent: bytes | None = head

    def commit(self, path: str, data: bytes) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.count += 1
        when = int(time.time())
        chunks = [b"commit refs/heads/fi\n"]
        chunks.append(b"committer bench <bench@example.com> %d +0000\ndata 2\nx\n" % when)
        if self.parent is not None:  # the first commit only: then fast-import's own tip
            chunks.append(b"from %s\n" % self.parent)
            self.parent = None
        chunks.append(b"M 100644 inline %s\ndata %d\n%s\n" % (path.encode(), len(data), data))
        chunks.append(b"checkpoint\nprogress c%d\n" % self.count)
        self.proc.stdin.write(b"".join(chunks))
        self.proc.stdin.flush()
        expected = b"progress c%d\n" % self.count
        while (line := self.proc.stdout.readline()) != expected:
            if not line:
                raise RuntimeError("git fast-import stopped")

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(60)


KINDS = ("ours", "porcelain", "plumbing", "fast-import")


def bench(path: Path, files: int, runs: int, config: list[str]) -> dict[str, list[float]]:
    """Times of ``runs`` commits each way, the four kinds taking turns (in an order that
    rotates every run), each after ``os.sync()``."""
    repo = Repo(str(path))
    times: dict[str, list[float]] = {kind: [] for kind in KINDS}
    try:
        main_head = branch_heads(repo)["main"]
        create_branch(repo, "ours", main_head)
        head = main_head
        plumbing = Plumbing(path, main_head, config)
        fast_import = FastImport(path, main_head, config)
        version = itertools.count(1)

        def ours(i: int, data: bytes) -> None:
            nonlocal head
            head = commit_changes(
                repo,
                "ours",
                {file_path(i): data},
                message="x\n",
                author="bench <bench@example.com>",
                expected=head,
            )

        def porcelain(i: int, data: bytes) -> None:
            subprocess.run(
                [
                    "sh",
                    "-c",
                    f"git {shlex.join(config)} add -A && git {shlex.join(config)} commit -q -m x",
                ],
                cwd=path,
                env=GIT_ENV,
                check=True,
            )

        try:
            for run in range(runs):
                shift = run % len(KINDS)
                for kind in KINDS[shift:] + KINDS[:shift]:
                    i = random.randrange(files)
                    data = content(i, next(version))
                    if kind == "porcelain":
                        (path / file_path(i)).write_bytes(data)  # the editor's save: not timed
                    os.sync()
                    start = time.perf_counter()
                    if kind == "ours":
                        ours(i, data)
                    elif kind == "porcelain":
                        porcelain(i, data)
                    elif kind == "plumbing":
                        plumbing.commit(file_path(i), data)
                    else:
                        fast_import.commit(file_path(i), data)
                    times[kind].append(time.perf_counter() - start)
        finally:
            fast_import.close()
    finally:
        repo.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--runs", type=int, default=41)
    parser.add_argument(
        "--git-durable",
        action="store_true",
        help="run git with core.fsync=all (fsync every file a commit writes, as ours does)",
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    config = GIT_DURABLE if args.git_durable else []
    random.seed(1)
    rows = []
    with tempfile.TemporaryDirectory(prefix="git-commit-bench-") as tmp:
        for files in sizes:
            path = Path(tmp) / f"repo{files}"
            start = time.perf_counter()
            build(path, files)
            built = time.perf_counter() - start
            times = bench(path, files, args.runs, config)
            medians = {kind: statistics.median(t) * 1000 for kind, t in times.items()}
            rows.append((files, medians, statistics.mean(times["ours"]) * 1000))
            print(f"built {files} files in {built:.1f} s", file=sys.stderr)
    durability = "core.fsync=all" if args.git_durable else "git's default core.fsync"
    print(f"median of {args.runs} commits, one changed file each (ms); git at {durability}")
    print(
        f"| {'files':>7} | {'ours':>7} | {'porcelain':>9} | {'plumbing':>8} | {'fast-import':>11} |"
        f" {'porcelain/ours':>14} | {'plumbing/ours':>13} | {'fast-import/ours':>16} |"
        f" {'ours mean':>9} |"
    )
    print("|" + "|".join("-" * (w + 2) for w in (7, 7, 9, 8, 11, 14, 13, 16, 9)) + "|")
    for files, m, mean in rows:
        ours = m["ours"]
        print(
            f"| {files:>7} | {ours:>7.2f} | {m['porcelain']:>9.2f} | {m['plumbing']:>8.2f} |"
            f" {m['fast-import']:>11.2f} | {m['porcelain'] / ours:>13.1f}x |"
            f" {m['plumbing'] / ours:>12.2f}x | {m['fast-import'] / ours:>15.2f}x |"
            f" {mean:>9.2f} |"
        )
    for files, m, _ in rows:
        if files == 10_000:
            porcelain, plumbing = m["porcelain"] / m["ours"], m["plumbing"] / m["ours"]
            print(
                f"goals at 10,000 files: porcelain/ours {porcelain:.1f}x (at least 15x:"
                f" {'met' if porcelain >= 15 else 'NOT met'}), plumbing/ours {plumbing:.2f}x"
                f" (at least 1.0x: {'met' if plumbing >= 1 else 'NOT met'})"
            )
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        growth = ", ".join(f"{kind} {last[1][kind] / first[1][kind]:.2f}x" for kind in KINDS)
        print(f"growth from {first[0]} to {last[0]} files: {growth}")


if __name__ == "__main__":
    main()
