"""Merge benchmark: ``gitsync`` merge planning and applying against ``git merge-tree --write-tree``.

A repository of 10,000 files (about 100 per directory) gets two branches off one base, each
changing N files; a third of the paths are changed on both sides, on different lines, so
every merge is clean. For each N:

- preview: ``plan_merge`` (tree diffs, the blobs changed on both sides read and merged; what
  the plan lists and what it would commit, without rendering diffs);
- apply: ``resolve_plan`` + ``commit_changes`` writing the merge commit (objects fsynced, ref
  moved by compare-and-swap);
- git: ``git merge-tree --write-tree target source`` (merges and writes the merged tree, not
  fsynced, moving no ref).

Every run starts from a fresh copy of the repository, so both write all their objects.

Prints medians and the ratios ours/git. Not a pass/fail test.

Usage: .venv/bin/python tests/bench/git_merge.py [--changed 10,1000] [--files 10000] [--runs 7]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from dulwich.repo import Repo  # noqa: E402

from gitsync.commits import branch_heads, commit_changes  # noqa: E402
from gitsync.merging import plan_merge, resolve_plan  # noqa: E402

GIT_ENV = {
    "HOME": "/nonexistent",
    "GIT_CONFIG_NOSYSTEM": "1",
    "PATH": "/usr/local/bin:/usr/bin:/bin",
}


def file_path(i: int) -> str:
    return f"d{i // 10_000:02d}/s{i // 100 % 100:02d}/f{i % 100:02d}.txt"


def content(i: int, first: str = "first", last: str = "last") -> bytes:
    middle = "".join(f"line {n} of file {i}\n" for n in range(20))
    return f"{first} line of {i}\n{middle}{last} line of {i}\n".encode()


def fast_import(path: Path, stream: bytes) -> None:
    subprocess.run(
        ["git", "-C", str(path), "fast-import", "--quiet"],
        input=stream,
        env=GIT_ENV,
        check=True,
    )


def blob_commit(branch: str, parent: str | None, files: dict[str, bytes], when: int) -> bytes:
    out = [f"commit refs/heads/{branch}\n".encode()]
    out.append(b"committer bench <bench@example.com> %d +0000\ndata 2\nx\n" % when)
    if parent:
        out.append(f"from {parent}\n".encode())
    for path, data in files.items():
        out.append(b"M 100644 inline %s\ndata %d\n%s\n" % (path.encode(), len(data), data))
    return b"".join(out)


def build(path: Path, files: int, changed: int) -> None:
    subprocess.run(
        ["git", "init", "-q", "--bare", "-b", "main", str(path)], env=GIT_ENV, check=True
    )
    fast_import(
        path, blob_commit("main", None, {file_path(i): content(i) for i in range(files)}, 1)
    )
    step = files // (2 * changed)
    both = [i * step for i in range(changed // 3)]
    theirs_only = [i * step + 1 for i in range(changed - len(both))]
    ours_only = [i * step + 2 for i in range(changed - len(both))]
    source = {file_path(i): content(i, first="FIRST") for i in both + theirs_only}
    target = {file_path(i): content(i, last="LAST") for i in both + ours_only}
    stream = blob_commit("topic", "main", source, 2) + blob_commit("main", "main^0", target, 3)
    fast_import(path, stream)


def one_run(pristine: Path, run: int) -> tuple[float, float, float, int]:
    """Preview, apply and git times (ms) on fresh copies of ``pristine``; files merged."""
    ours_path, git_path = pristine.with_name(f"ours{run}"), pristine.with_name(f"git{run}")
    shutil.copytree(pristine, ours_path)
    shutil.copytree(pristine, git_path)
    os.sync()  # the copies are on disk before anything is timed
    repo = Repo(str(ours_path))
    try:
        heads = branch_heads(repo)
        source, target = heads["topic"], heads["main"]
        start = time.perf_counter()
        plan = plan_merge(repo, source, target)
        preview = time.perf_counter() - start
        assert not plan.conflicts and plan.files
        start = time.perf_counter()
        commit_changes(
            repo,
            "main",
            resolve_plan(plan, markers=False),
            message="Merge topic\n",
            author="bench <bench@example.com>",
            expected=target,
            extra_parents=[source],
        )
        applied = time.perf_counter() - start
    finally:
        repo.close()
    start = time.perf_counter()
    subprocess.run(
        ["git", "-C", str(git_path), "merge-tree", "--write-tree", "main", "topic"],
        env=GIT_ENV,
        check=True,
        capture_output=True,
    )
    git = time.perf_counter() - start
    shutil.rmtree(ours_path)
    shutil.rmtree(git_path)
    return preview * 1000, applied * 1000, git * 1000, len(plan.files)


def bench(pristine: Path, runs: int) -> tuple[float, float, float, int]:
    """Median preview, apply and git times; every run works on fresh copies of the
    repository, so both sides write all of their objects each time."""
    results = [one_run(pristine, run) for run in range(runs)]
    median = statistics.median
    return (
        median(r[0] for r in results),
        median(r[1] for r in results),
        median(r[2] for r in results),
        results[0][3],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changed", default="10,1000")
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="git-merge-bench-") as tmp:
        for changed in (int(n) for n in args.changed.split(",")):
            path = Path(tmp) / f"repo{changed}"
            build(path, args.files, changed)
            rows.append((changed, *bench(path, args.runs)))
    print(f"{args.files} files, median of {args.runs} runs (ms); N files changed on each side")
    header = f"{'N':>6} {'files':>6} {'preview':>9} {'apply':>9} {'both':>9} {'git':>9}"
    print(header + f" {'preview/git':>12} {'both/git':>9}")
    for changed, preview, applied, git, merged in rows:
        both = preview + applied
        print(
            f"{changed:>6} {merged:>6} {preview:>9.2f} {applied:>9.2f} {both:>9.2f} {git:>9.2f}"
            f" {preview / git:>11.2f}x {both / git:>8.2f}x"
        )


if __name__ == "__main__":
    main()
