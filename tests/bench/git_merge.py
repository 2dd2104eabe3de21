"""Merge benchmark: ``gitsync`` merges against ``git merge-tree --write-tree``, like for like.

Synthetic: a repository of 10,000 files (about 100 per directory) gets two branches off one
base, each changing N files; a third of the changed paths are changed on both sides. How the
files changed on both sides differ is the workload:

- splice: one side changes a file's first line, the other its last (one run of lines each,
  far apart);
- scattered: each side changes three lines, interleaved with the other's (clean);
- conflict: both sides change the same line differently (conflict markers).

For each workload and N, each run on fresh copies of the repository (so both write all their
objects), timed:

- write, ours: ``Repo()`` opened, ``plan_merge``, ``resolve_plan`` (with markers) and the
  merged tree's blobs and trees (``merged_tree``: built from the trees the plan read) written
  (one pack, fsynced), no commit, no ref moved;
  git: ``git merge-tree --write-tree`` (opens the repository, merges, writes the merged tree's
  objects; no commit, no ref). Like for like: both open the repository and write the tree;
  git also pays a process start, and at git's defaults writes loose objects without fsync
  (``--git-durable``: ``core.fsync=all``).
- commit, ours: ``Repo()``, ``plan_merge``, ``resolve_plan`` and ``commit_changes`` (the
  merge commit written, the ref moved by compare-and-swap); git: ``merge-tree --write-tree``,
  ``commit-tree -p -p`` and ``update-ref NEW OLD`` (three process starts).
- old: ``plan_merge`` alone on an open ``Repo`` (preview: writes nothing) and then
  ``resolve_plan`` + ``commit_changes`` (apply), against the same ``merge-tree --write-tree``
  (which opens the repository and writes objects): how this benchmark compared before.

Each run also checks that ours and git agree (conflicted paths, and the merged tree, markers
included). Prints medians and the ratios ours/git (below 1: ours is faster).

Real history (``--history BUNDLE``, default the psf/requests bundle in
``../shared/data/git-histories/``): every two-parent merge M = (P1, P2) of the bundle is
replayed (``--limit`` caps them, ``--every K`` takes one in K) in a bare clone:

- ours: ``Repo()`` opened, ``plan_merge(P2 into P1)``, ``resolve_plan`` with markers (labels
  P1, P2, as git labels them), the merged tree built (``merged_tree``) and the objects the
  store lacks written (one pack, fsynced; usually none: the merged tree is mostly M's, which
  the clone has). The small packs these writes leave are combined as ``commit_changes``
  combines them, after the clock stops (upkeep, as ``git gc`` is for git; without it the
  clone's packs pile up, and every lookup visits each of them);
- git: ``git merge-tree --write-tree --name-only --no-messages P1 P2`` (which also writes
  only what the store lacks).

They agree when both are clean with the same tree, or both conflict on the same paths (and,
reported apart, with the same tree, markers included). Prints the totals and percentiles of
both times, the ratio, and the merges that disagree. Not a pass/fail test. On a shared
machine, ``--repeat 3`` (the median of three replays of each merge) steadies the tail; the
commits our merges read stay in a process-wide table, as in a server, unless ``--cold``.

Usage: .venv/bin/python tests/bench/git_merge.py [--changed 10,1000] [--files 10000]
       [--runs 7] [--workloads splice,scattered,conflict] [--history BUNDLE|none]
       [--limit N] [--every K] [--repeat N] [--cold] [--git-durable]
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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from dulwich.repo import Repo  # noqa: E402

from gitsync.merge.merge_base import clear_commit_cache  # noqa: E402
from gitsync.merge.plan import (  # noqa: E402
    UnrelatedHistories,
    merged_tree,
    plan_merge,
    resolve_plan,
)
from gitsync.objects.commits import (  # noqa: E402
    branch_heads,
    commit_changes,
    write_objects,
)
from gitsync.packs.write import combine_small_packs  # noqa: E402

GIT_ENV = {
    "HOME": "/nonexistent",
    "GIT_CONFIG_NOSYSTEM": "1",
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
}
GIT_DURABLE = ["-c", "core.fsync=all", "-c", "core.fsyncMethod=fsync"]
HISTORY = ROOT.parent / "shared" / "data" / "git-histories" / "requests.bundle"
LABELS = ("main", "topic")  # as git labels the conflict markers of `merge-tree main topic`


def file_path(i: int) -> str:
    return f"d{i // 10_000:02d}/s{i // 100 % 100:02d}/f{i % 100:02d}.txt"


def content(i: int, edits: Mapping[int, str] | None = None) -> bytes:
    """File ``i``: 22 lines, some replaced (line number -> new text)."""
    lines = [f"first line of {i}"] + [f"line {n} of file {i}" for n in range(20)]
    lines.append(f"last line of {i}")
    for n, text in (edits or {}).items():
        lines[n] = text
    return "".join(line + "\n" for line in lines).encode()


# the edits of the files changed on both sides: (source's, target's)
WORKLOADS: dict[str, tuple[dict[int, str], dict[int, str]]] = {
    "splice": ({0: "FIRST"}, {21: "LAST"}),
    "scattered": ({2: "S2", 8: "S8", 14: "S14"}, {5: "T5", 11: "T11", 17: "T17"}),
    "conflict": ({10: "SOURCE'S TEN"}, {10: "TARGET'S TEN"}),
}


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


def build(path: Path, files: int, changed: int, workload: str) -> None:
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
    theirs_edit, ours_edit = WORKLOADS[workload]
    source = {file_path(i): content(i, theirs_edit) for i in both}
    source |= {file_path(i): content(i, {0: "FIRST"}) for i in theirs_only}
    target = {file_path(i): content(i, ours_edit) for i in both}
    target |= {file_path(i): content(i, {21: "LAST"}) for i in ours_only}
    stream = blob_commit("topic", "main", source, 2) + blob_commit("main", "main^0", target, 3)
    fast_import(path, stream)


def git(
    path: Path, *args: str, config: list[str], check: bool = True
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["git", "-C", str(path), *config, *args], env=GIT_ENV, check=check, capture_output=True
    )


def ours_write(path: Path) -> tuple[float, bytes, set[str]]:
    """Open, plan, resolve and write the merged tree's objects; (seconds, tree, conflicts)."""
    start = time.perf_counter()
    repo = Repo(str(path))
    try:
        heads = branch_heads(repo)
        plan = plan_merge(repo, heads["topic"], heads["main"], labels=LABELS)
        tree, objects = merged_tree(plan, resolve_plan(plan, markers=True))
        write_objects(repo, objects)
    finally:
        repo.close()
    return time.perf_counter() - start, tree, set(plan.conflicts)


def ours_commit(path: Path) -> float:
    start = time.perf_counter()
    repo = Repo(str(path))
    try:
        heads = branch_heads(repo)
        source, target = heads["topic"], heads["main"]
        plan = plan_merge(repo, source, target, labels=LABELS)
        commit_changes(
            repo,
            "main",
            resolve_plan(plan, markers=True),
            message="Merge topic\n",
            author="bench <bench@example.com>",
            expected=target,
            extra_parents=[source],
        )
    finally:
        repo.close()
    return time.perf_counter() - start


def ours_old(path: Path) -> tuple[float, float, int]:
    """The old measurement: preview (``plan_merge`` on an open Repo) and apply; files merged."""
    repo = Repo(str(path))
    try:
        heads = branch_heads(repo)
        source, target = heads["topic"], heads["main"]
        start = time.perf_counter()
        plan = plan_merge(repo, source, target, labels=LABELS)
        preview = time.perf_counter() - start
        start = time.perf_counter()
        commit_changes(
            repo,
            "main",
            resolve_plan(plan, markers=True),
            message="Merge topic\n",
            author="bench <bench@example.com>",
            expected=target,
            extra_parents=[source],
        )
        applied = time.perf_counter() - start
    finally:
        repo.close()
    return preview, applied, len(plan.files)


def git_write(path: Path, config: list[str]) -> tuple[float, bytes, set[str]]:
    start = time.perf_counter()
    out = git(
        path,
        "merge-tree",
        "--write-tree",
        "--name-only",
        "--no-messages",
        "main",
        "topic",
        config=config,
        check=False,
    )
    elapsed = time.perf_counter() - start
    if out.returncode not in (0, 1):
        raise RuntimeError(out.stderr.decode())
    tree, *names = out.stdout.decode().split("\n")
    return elapsed, tree.strip().encode(), {n for n in names if n}


def git_commit(path: Path, config: list[str], target: str, source: str) -> float:
    """``merge-tree``, ``commit-tree`` and a compare-and-swap ``update-ref``; the two heads'
    ids are given (ours reads them inside its time, in process: a fraction of a ms)."""
    start = time.perf_counter()
    out = git(path, "merge-tree", "--write-tree", target, source, config=config, check=False)
    if out.returncode not in (0, 1):
        raise RuntimeError(out.stderr.decode())
    tree = out.stdout.decode().split("\n")[0].strip()
    commit = git(
        path, "commit-tree", tree, "-p", target, "-p", source, "-m", "Merge topic", config=config
    )
    git(
        path, "update-ref", "refs/heads/main", commit.stdout.decode().strip(), target, config=config
    )
    return time.perf_counter() - start


def one_run(pristine: Path, run: int, config: list[str], heads: tuple[str, str]) -> dict[str, Any]:
    """Every measurement once, each on a fresh copy of ``pristine`` (whose main and topic are
    ``heads``)."""
    copies: dict[str, Path] = {}
    for name in ("old", "write", "commit", "git-write", "git-commit"):
        copies[name] = pristine.with_name(f"{name}{run}")
        shutil.copytree(pristine, copies[name])
    os.sync()  # the copies are on disk before anything is timed
    out: dict[str, Any] = {}
    found: dict[str, tuple[bytes, set[str]]] = {}

    def old() -> None:
        out["preview"], out["apply"], out["files"] = ours_old(copies["old"])

    def write() -> None:
        out["write"], *found["ours"] = ours_write(copies["write"])

    def commit() -> None:
        out["commit"] = ours_commit(copies["commit"])

    def g_write() -> None:
        out["git_write"], *found["git"] = git_write(copies["git-write"], config)

    def g_commit() -> None:
        out["git_commit"] = git_commit(copies["git-commit"], config, *heads)

    steps = [old, write, g_write, commit, g_commit]
    shift = run % len(steps)  # the order rotates from run to run
    try:
        for step in steps[shift:] + steps[:shift]:
            step()
        out["agree"] = found["ours"] == found["git"]
        out["conflicts"] = len(found["ours"][1])
    finally:
        for path in copies.values():
            shutil.rmtree(path)
    return out


def synthetic(args: argparse.Namespace, config: list[str]) -> None:
    rows = []
    with tempfile.TemporaryDirectory(prefix="git-merge-bench-") as tmp:
        for workload in args.workloads.split(","):
            for changed in (int(n) for n in args.changed.split(",")):
                path = Path(tmp) / f"{workload}{changed}"
                build(path, args.files, changed, workload)
                main_head, topic_head = (
                    git(path, "rev-parse", name, config=[]).stdout.decode().strip()
                    for name in ("main", "topic")
                )
                heads = (main_head, topic_head)
                runs = [one_run(path, run, config, heads) for run in range(args.runs)]
                median = {
                    key: statistics.median(r[key] for r in runs) * 1000
                    for key in ("preview", "apply", "write", "commit", "git_write", "git_commit")
                }
                agree = all(r["agree"] for r in runs)
                rows.append(
                    (workload, changed, runs[0]["files"], runs[0]["conflicts"], median, agree)
                )
                shutil.rmtree(path)
    print(
        f"synthetic: {args.files} files, median of {args.runs} runs (ms); N files changed on"
        f" each side; git at {durability(args)}"
    )
    print(
        f"| {'workload':<9} | {'N':>5} | {'files':>5} | {'confl':>5} | {'write':>7} |"
        f" {'git write':>9} | {'write/git':>9} | {'commit':>7} | {'git commit':>10} |"
        f" {'commit/git':>10} | {'old preview':>11} | {'old apply':>9} | {'old preview/git':>15} |"
        f" {'old both/git':>12} | {'agree':>5} |"
    )
    widths = (9, 5, 5, 5, 7, 9, 9, 7, 10, 10, 11, 9, 15, 12, 5)
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for workload, changed, files, conflicts, m, agree in rows:
        print(
            f"| {workload:<9} | {changed:>5} | {files:>5} | {conflicts:>5} | {m['write']:>7.2f} |"
            f" {m['git_write']:>9.2f} | {m['write'] / m['git_write']:>8.2f}x |"
            f" {m['commit']:>7.2f} | {m['git_commit']:>10.2f} |"
            f" {m['commit'] / m['git_commit']:>9.2f}x | {m['preview']:>11.2f} |"
            f" {m['apply']:>9.2f} | {m['preview'] / m['git_write']:>14.2f}x |"
            f" {(m['preview'] + m['apply']) / m['git_write']:>11.2f}x | {'yes' if agree else 'NO':>5} |"
        )


def history(args: argparse.Namespace, config: list[str]) -> None:
    """Replay the two-parent merges of a real history through ours and git."""
    bundle = Path(args.history)
    with tempfile.TemporaryDirectory(prefix="git-merge-history-") as tmp:
        clone = Path(tmp) / "history.git"
        subprocess.run(
            ["git", "clone", "-q", "--bare", str(bundle), str(clone)], env=GIT_ENV, check=True
        )
        listed = git(clone, "rev-list", "--all", "--merges", "--parents", config=[])
        merges = [line.split() for line in listed.stdout.decode().splitlines()]
        two_parent = [m for m in merges if len(m) == 3]
        chosen = two_parent[:: args.every][: args.limit or None]
        ours_times, git_times = [], []
        stats = {"clean": 0, "conflict": 0, "conflict_same_tree": 0, "unrelated": 0}
        disagree: list[str] = []
        for n, (merge, p1, p2) in enumerate(chosen):
            runs: dict[str, list[tuple[float, Any]]] = {"ours": [], "git": []}
            for repeat in range(args.repeat):
                # who goes first alternates, so neither always finds the other's reads cached
                order = ("ours", "git") if (n + repeat) % 2 == 0 else ("git", "ours")
                for who in order:
                    if who == "ours" and args.cold:
                        clear_commit_cache()
                    runs[who].append(
                        replay_ours(clone, p1, p2)
                        if who == "ours"
                        else replay_git(clone, p1, p2, config)
                    )
            ours, theirs = runs["ours"][0][1], runs["git"][0][1]
            ours_times.append(statistics.median(t for t, _ in runs["ours"]))
            git_times.append(statistics.median(t for t, _ in runs["git"]))
            verdict = compare(ours, theirs)
            if verdict in stats:
                stats[verdict] += 1
                if verdict == "conflict" and ours[0] == theirs[0]:
                    stats["conflict_same_tree"] += 1
            else:
                disagree.append(f"{merge[:12]} ({p1[:12]} + {p2[:12]}): {verdict}")
    total = len(chosen)
    print(
        f"\nreal history: {bundle.name}, {total} of its {len(two_parent)} two-parent merges"
        f" replayed (every {args.every}, limit {args.limit or 'none'}; each merge"
        f" {args.repeat} time(s), its median kept; commit cache"
        f" {'cleared before each of ours' if args.cold else 'kept, as a server keeps it'});"
        f" git at {durability(args)}"
    )
    agreed = total - len(disagree)
    print(
        f"agree: {agreed} of {total} (clean with the same tree: {stats['clean']}; conflicted"
        f" on the same paths: {stats['conflict']}, of which with the same tree, markers"
        f" included: {stats['conflict_same_tree']}; unrelated histories, refused by both:"
        f" {stats['unrelated']}); disagree: {len(disagree)}"
    )
    for line in disagree:
        print(f"  disagree: {line}")
    print(
        f"| {'':<4} | {'total s':>8} | {'p50 ms':>7} | {'p90 ms':>7} | {'p99 ms':>7} | {'max ms':>8} |"
    )
    print("|------|----------|---------|---------|---------|----------|")
    for name, times in (("ours", ours_times), ("git", git_times)):
        q = statistics.quantiles(times, n=100, method="inclusive") if len(times) > 1 else times * 99
        print(
            f"| {name:<4} | {sum(times):>8.2f} | {q[49] * 1000:>7.2f} | {q[89] * 1000:>7.2f} |"
            f" {q[98] * 1000:>7.2f} | {max(times) * 1000:>8.2f} |"
        )
    per_merge = [o / g for o, g in zip(ours_times, git_times, strict=True)]
    print(
        f"ratio ours/git: total {sum(ours_times) / sum(git_times):.2f}x, median of the"
        f" merges' ratios {statistics.median(per_merge):.2f}x (below 1: ours is faster)"
    )


Outcome = tuple[bytes | None, frozenset[str] | None, str]  # (tree, conflicts, failure)


def replay_ours(clone: Path, p1: str, p2: str) -> tuple[float, Outcome]:
    """Merge ``p2`` into ``p1``: open, plan, resolve with markers, build the merged tree and
    write the objects the store lacks. The small packs the writes leave are then combined,
    as ``commit_changes`` combines them, but after the clock stops: that is upkeep, which
    git also leaves for later (``git gc``); without it every lookup would visit more packs
    as the replay goes on."""
    start = time.perf_counter()
    outcome: Outcome
    repo = Repo(str(clone))
    wrote = False
    try:
        plan = plan_merge(repo, p2.encode(), p1.encode(), labels=(p1, p2))
        tree, missing = merged_tree(plan, resolve_plan(plan, markers=True))
        if missing:
            write_objects(repo, missing)
            wrote = True
        outcome = (tree, frozenset(plan.conflicts), "")
    except UnrelatedHistories:
        outcome = (None, None, "unrelated")
    except Exception as exc:  # a failure is reported as a disagreement, not raised
        outcome = (None, None, f"ours failed: {exc!r}"[:200])
    elapsed = time.perf_counter() - start
    try:
        if wrote:
            combine_small_packs(repo.object_store)
    finally:
        repo.close()
    return elapsed, outcome


def replay_git(clone: Path, p1: str, p2: str, config: list[str]) -> tuple[float, Outcome]:
    start = time.perf_counter()
    out = git(
        clone,
        "merge-tree",
        "--write-tree",
        "--name-only",
        "--no-messages",
        p1,
        p2,
        config=config,
        check=False,
    )
    elapsed = time.perf_counter() - start
    if out.returncode not in (0, 1):
        error = out.stderr.decode()
        return elapsed, (
            None,
            None,
            "unrelated" if "unrelated" in error else f"git failed: {error[:200]}",
        )
    tree, *names = out.stdout.decode().split("\n")
    conflicts = frozenset(n for n in names if n) if out.returncode == 1 else frozenset()
    return elapsed, (tree.strip().encode(), conflicts, "")


def compare(ours: Outcome, theirs: Outcome) -> str:
    """``clean``, ``conflict`` or ``unrelated`` when ours and git agree; else why not."""
    if ours[2] or theirs[2]:
        if ours[2] == theirs[2] == "unrelated":
            return "unrelated"
        return f"ours: {ours[2] or 'merged'}; git: {theirs[2] or 'merged'}"
    assert ours[1] is not None and theirs[1] is not None
    if bool(ours[1]) != bool(theirs[1]):
        return (
            f"ours {'conflicts' if ours[1] else 'is clean'}, git {'conflicts' if theirs[1] else 'is clean'}"
            + (f" (conflicted: {sorted(ours[1] or theirs[1])[:5]})")
        )
    if ours[1] != theirs[1]:
        return f"different conflicted paths: ours only {sorted(ours[1] - theirs[1])[:5]}, git only {sorted(theirs[1] - ours[1])[:5]}"
    if not ours[1] and ours[0] != theirs[0]:
        return "clean, different trees"
    return "conflict" if ours[1] else "clean"


def durability(args: argparse.Namespace) -> str:
    return "core.fsync=all" if args.git_durable else "git's default core.fsync"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--changed", default="10,1000")
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--workloads", default="splice,scattered,conflict", help="'none': skip")
    parser.add_argument("--history", default=str(HISTORY), help="a git bundle, or 'none'")
    parser.add_argument("--limit", type=int, default=0, help="replay at most this many merges")
    parser.add_argument("--every", type=int, default=1, help="replay one merge in this many")
    parser.add_argument(
        "--git-durable", action="store_true", help="run git with core.fsync=all, as ours fsyncs"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="replay each real merge this many times"
    )
    parser.add_argument(
        "--cold",
        action="store_true",
        help="forget the commits read (process-wide cache) before each of our merges",
    )
    args = parser.parse_args()
    config = GIT_DURABLE if args.git_durable else []
    if args.workloads != "none":
        synthetic(args, config)
    if args.history != "none":
        history(args, config)


if __name__ == "__main__":
    main()
