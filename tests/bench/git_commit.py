"""Commit benchmark: ``gitsync.commit_changes`` against the git CLI, one changed file per commit.

For each size (files in the repository, about 100 per directory, three levels deep) one
repository is built with ``git fast-import`` and checked out. Each run changes one file:

- ours: ``commit_changes`` on a branch of that repository (objects fsynced, ref moved by CAS);
- git: the same change written to the worktree, then ``git add -A && git commit -q -m x``.

The two kinds of commit alternate, so both meet the same repository and disk, and every commit
starts after ``os.sync()``: each is timed for the writes it makes durable itself (ours fsyncs
its pack, index, directory and ref; git by default fsyncs none of a commit's files), not for
flushing what the other left in the page cache. Prints the median time per commit, the ratio
git/ours at each size, how our time grows from the smallest to the largest size, and our mean
(which includes the occasional combination of small packs, see ``gitsync.packing``). Not a
pass/fail test.

Usage: .venv/bin/python tests/bench/git_commit.py [--sizes 1000,10000,100000] [--runs 41]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from dulwich.repo import Repo  # noqa: E402

from gitsync.commits import branch_heads, commit_changes, create_branch  # noqa: E402

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


def git(repo: Path, *args: str, stdin: bytes | None = None) -> bytes:
    return subprocess.run(
        ["git", "-C", str(repo), *args], input=stdin, env=GIT_ENV, check=True, capture_output=True
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


def bench(path: Path, files: int, runs: int) -> tuple[list[float], list[float]]:
    """Times of ``runs`` commits each way, alternating ours and git, each after ``os.sync()``."""
    repo = Repo(str(path))
    ours, cli = [], []
    try:
        create_branch(repo, "ours", branch_heads(repo)["main"])
        head = branch_heads(repo)["ours"]
        for run in range(runs):
            i = random.randrange(files)
            os.sync()
            start = time.perf_counter()
            head = commit_changes(
                repo,
                "ours",
                {file_path(i): content(i, run + 1)},
                message="x\n",
                author="bench <bench@example.com>",
                expected=head,
            )
            ours.append(time.perf_counter() - start)
            i = random.randrange(files)
            (path / file_path(i)).write_bytes(content(i, 1000 + run))
            os.sync()
            start = time.perf_counter()
            subprocess.run(
                ["sh", "-c", "git add -A && git commit -q -m x"], cwd=path, env=GIT_ENV, check=True
            )
            cli.append(time.perf_counter() - start)
    finally:
        repo.close()
    return ours, cli


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--runs", type=int, default=41)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    random.seed(1)
    rows = []
    with tempfile.TemporaryDirectory(prefix="git-commit-bench-") as tmp:
        for files in sizes:
            path = Path(tmp) / f"repo{files}"
            start = time.perf_counter()
            build(path, files)
            built = time.perf_counter() - start
            ours_times, cli_times = bench(path, files, args.runs)
            ours = statistics.median(ours_times) * 1000
            cli = statistics.median(cli_times) * 1000
            rows.append((files, ours, cli, statistics.mean(ours_times) * 1000))
            print(f"built {files} files in {built:.1f} s", file=sys.stderr)
    print(f"median of {args.runs} commits, one changed file each (ms)")
    print(f"{'files':>8} {'ours':>9} {'git CLI':>9} {'git/ours':>9} {'ours mean':>10}")
    for files, ours, cli, mean in rows:
        print(f"{files:>8} {ours:>9.2f} {cli:>9.2f} {cli / ours:>8.1f}x {mean:>10.2f}")
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        print(
            f"growth of ours from {first[0]} to {last[0]} files: {last[1] / first[1]:.2f}x "
            f"(git CLI: {last[2] / first[2]:.2f}x)"
        )


if __name__ == "__main__":
    main()
