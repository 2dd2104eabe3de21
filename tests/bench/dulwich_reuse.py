"""Our merge, pack reader and pack writer against what dulwich ships, on a real history.

- merge: ``plan_merge`` (its tree built in memory, ``merged_tree``) and
  ``dulwich.merge.recursive_merge``
  (its objects written to a memory store) for every two-parent merge commit of the history,
  each checked against ``git merge-tree --write-tree`` (tree id and conflicted paths);
- reader: every object of the history read once with ``gitsync.packs.read.ObjectReader`` and with
  dulwich's ``get_raw``; then ``plan_merge`` of a 10,000-file merge (``tests/bench/git_merge``,
  1,000 files changed a side, the splice workload) reading through each, the repository open
  and warm;
- writer: a continuous commit's five objects encoded as a pack and its index, and written
  durably (fsynced), by ``gitsync.packs.write`` and by dulwich (``write_pack_objects``,
  ``write_pack_index_v2``, ``DiskObjectStore.add_objects`` with ``fsync_object_files``).

Prints medians. Not a pass/fail test.

Usage: .venv/bin/python tests/bench/dulwich_reuse.py [--bundle PATH] [--runs 3]
"""

from __future__ import annotations

import argparse
import io
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

import git_merge  # noqa: E402
from dulwich.graph import find_merge_base  # noqa: E402
from dulwich.merge import recursive_merge  # noqa: E402
from dulwich.object_store import MemoryObjectStore, OverlayObjectStore  # noqa: E402
from dulwich.objects import Blob, Commit, ObjectID, ShaFile, Tree  # noqa: E402
from dulwich.pack import write_pack_index_v2, write_pack_objects  # noqa: E402
from dulwich.repo import Repo  # noqa: E402

import gitsync.merge.plan as merging  # noqa: E402
from gitsync.objects.commits import branch_heads  # noqa: E402
from gitsync.packs.read import ObjectReader  # noqa: E402
from gitsync.packs.write import encode_index, encode_pack, fsync_directory, write_pack  # noqa: E402

BUNDLE = ROOT.parent / "shared" / "data" / "git-histories" / "requests.bundle"
Merge = tuple[str, str]
MERGES = ("--min-parents=2", "--max-parents=2")
MERGE_TREE = ("--write-tree", "--name-only", "--no-messages")


def median_of(runs: int, work: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def two_parent_merges(path: Path) -> list[Merge]:
    out = subprocess.run(
        ["git", "-C", str(path), "rev-list", "--all", *MERGES, "--parents"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [(line.split()[1], line.split()[2]) for line in out.splitlines()]


def git_answer(path: Path, ours: str, theirs: str) -> tuple[str, set[str]]:
    done = subprocess.run(
        ["git", "-C", str(path), "merge-tree", *MERGE_TREE, ours, theirs],
        capture_output=True,
        text=True,
    )
    tree, *names = done.stdout.split("\n")
    return tree.strip(), {n for n in names if n}


def engine_merge(repo: Repo, ours: str, theirs: str) -> tuple[str, set[str]]:
    plan = merging.plan_merge(repo, theirs.encode(), ours.encode(), labels=(ours, theirs))
    tree, _ = merging.merged_tree(plan, merging.resolve_plan(plan, markers=True))
    return tree.decode(), set(plan.conflicts)


def dulwich_merge(repo: Repo, ours: str, theirs: str) -> tuple[str, set[str]]:
    memory = MemoryObjectStore()
    store = OverlayObjectStore([memory, repo.object_store], add_store=memory)
    a, b = ObjectID(ours.encode()), ObjectID(theirs.encode())
    tree, conflicts = recursive_merge(store, find_merge_base(repo, [a, b]), repo[a], repo[b])
    return tree.id.decode(), {c.decode("utf-8", "surrogateescape") for c in conflicts}


def bench_merges(path: Path, runs: int) -> None:
    repo = Repo(str(path))
    merges = two_parent_merges(path)
    answers = {merge: git_answer(path, *merge) for merge in merges}
    print(f"merges: {len(merges)} two-parent merge commits")
    for name, merge in (("engine", engine_merge), ("dulwich", dulwich_merge)):
        agree = 0
        for ours, theirs in merges:
            if merge(repo, ours, theirs) == answers[(ours, theirs)]:
                agree += 1
        seconds = median_of(runs, lambda merge=merge: [merge(repo, *m) for m in merges])
        print(f"  {name:8} {agree} agree with git (tree and conflicts), {seconds:.2f}s")
    bases = median_of(
        runs,
        lambda: [
            find_merge_base(repo, [ObjectID(a.encode()), ObjectID(b.encode())]) for a, b in merges
        ],
    )
    print(f"  (dulwich's find_merge_base alone: {bases:.2f}s; the engine finds them itself)")
    repo.close()


class DulwichReader:
    """``ObjectReader``'s interface on dulwich's ``get_raw``."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def raw(self, sha: bytes) -> bytes:
        _, chunks = self.store.get_raw(ObjectID(sha))
        return chunks if isinstance(chunks, bytes) else b"".join(chunks)


def bench_reader(path: Path, runs: int) -> None:
    repo = Repo(str(path))
    ids = [bytes(sha) for sha in repo.object_store]
    readers: dict[str, Callable[[Any], Any]] = {"engine": ObjectReader, "dulwich": DulwichReader}
    for name, make in readers.items():

        def read_all(make: Callable[[Any], Any] = make) -> None:
            fresh = Repo(str(path))  # opened anew each time: nothing cached from before
            reader = make(fresh.object_store)
            for sha in ids:
                reader.raw(sha)
            fresh.close()

        seconds = median_of(runs, read_all)
        print(f"reader: {name:8} every object of the history ({len(ids)}) once, {seconds:.2f}s")
    repo.close()
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "big"
        git_merge.build(big, 10_000, 1000, "splice")
        repo = Repo(str(big))
        heads = branch_heads(repo)
        real = merging.ObjectReader
        try:
            for name, make in readers.items():
                merging.ObjectReader = make  # type: ignore[assignment,misc]
                merging.plan_merge(repo, heads["topic"], heads["main"])  # warm
                seconds = median_of(
                    5 * runs, lambda: merging.plan_merge(repo, heads["topic"], heads["main"])
                )
                print(f"reader: {name:8} plan_merge of 1,000 files a side, {seconds * 1000:.1f}ms")
        finally:
            merging.ObjectReader = real  # type: ignore[misc]
            repo.close()


def commit_objects(i: int) -> list[ShaFile]:
    """What a continuous commit of one file writes: its blob, three trees, the commit."""
    blob = Blob.from_string(b"".join(b"line %d of file %d\n" % (n, i) for n in range(40)))
    leaf, middle, top = Tree(), Tree(), Tree()
    leaf.add(b"f%d.txt" % i, 0o100644, blob.id)
    middle.add(b"s", 0o040000, leaf.id)
    top.add(b"d", 0o040000, middle.id)
    commit = Commit()
    commit.tree = top.id
    commit.author = commit.committer = b"A <a@example.com>"
    commit.author_time = commit.commit_time = 1_700_000_000 + i
    commit.author_timezone = commit.commit_timezone = 0
    commit.message = b"edit %d\n" % i
    return [blob, leaf, middle, top, commit]


def bench_writer(runs: int) -> None:
    sets = [commit_objects(i) for i in range(200)]
    with tempfile.TemporaryDirectory() as tmp:
        fmt = Repo.init_bare(tmp).object_store.object_format

        def per_set(work: Callable[[list[ShaFile]], object]) -> float:
            return median_of(runs, lambda: [work(s) for s in sets]) / len(sets) * 1e6

        ours = per_set(lambda s: encode_pack(s, fmt))
        theirs = per_set(
            lambda s: write_pack_objects(
                io.BytesIO().write, s, object_format=fmt, compression_level=1
            )
        )
        print(f"writer: a commit's pack, engine {ours:.1f}us, dulwich {theirs:.1f}us")
        rows, checksum = encode_pack(sets[0], fmt)[1], b"\0" * 20
        ours = per_set(lambda s: encode_index(rows, checksum))
        theirs = per_set(lambda s: write_pack_index_v2(io.BytesIO(), rows, checksum))
        print(f"writer: its index, engine {ours:.1f}us, dulwich {theirs:.1f}us")
    with tempfile.TemporaryDirectory() as tmp:  # the two alternate: a disk's mood hits both
        stores = {}
        for name in ("engine", "dulwich"):
            stores[name] = Repo.init_bare(str(Path(tmp, name)), mkdir=True).object_store
            stores[name].fsync_object_files = True
        times: dict[str, list[float]] = {"engine": [], "dulwich": []}
        for objects in sets[:100]:
            for name, store in stores.items():
                start = time.perf_counter()
                if name == "engine":
                    write_pack(store, objects)
                else:  # as durable: the directory's renames fsynced too
                    store.add_objects([(obj, None) for obj in objects])
                    fsync_directory(str(store.pack_dir))
                times[name].append(time.perf_counter() - start)
    for name, taken in times.items():
        print(f"writer: {name:8} durable write of a commit, {statistics.median(taken) * 1e3:.2f}ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=BUNDLE)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dulwich-reuse-") as tmp:
        path = Path(tmp) / "history.git"
        subprocess.run(["git", "clone", "-q", "--bare", str(args.bundle), str(path)], check=True)
        bench_merges(path, args.runs)
        bench_reader(path, args.runs)
    bench_writer(args.runs)


if __name__ == "__main__":
    main()
