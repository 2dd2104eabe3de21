"""Generated histories merged by the engine and by ``git merge-tree --write-tree``: the same
conflicted paths and the same tree (conflict markers included), merge after merge.

Each history forks a small repository (a few directories of files whose lines are mostly
their own, with blank lines and braces in common) and changes it on both sides: lines edited,
inserted (often at the same place on both sides), deleted; files renamed (with and without
edits, to the same or another directory, both sides alike or differently), deleted,
added (sometimes close to an existing file), made executable, replaced by a directory;
whole directories moved. Some histories are criss-crossed: each side merges the other and
resolves differently, so the final merge has two best common ancestors.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from dulwich.repo import Repo
from gitmerge import GitFailed, commit, git_merge_tree, our_tree

from gitsync.merge.plan import plan_merge

Tree = dict[str, tuple[int, bytes]]
DIRS = ["", "src/", "src/util/", "docs/", "lib/"]


def new_file(rng: random.Random, name: str) -> bytes:
    lines = []
    for i in range(rng.randint(8, 30)):
        roll = rng.random()
        if roll < 0.15:
            lines.append("")
        elif roll < 0.25:
            lines.append("}")
        else:
            lines.append(f"{name} line {i} {rng.choice(['alpha', 'beta', 'gamma'])}")
    return "".join(line + "\n" for line in lines).encode()


def edit(rng: random.Random, data: bytes, anchors: list[int]) -> bytes:
    lines = data.split(b"\n")[:-1]
    for _ in range(rng.randint(1, 3)):
        if not lines:
            break
        # positions near the anchors make both sides touch the same place often
        at = min(
            len(lines), rng.choice(anchors) if rng.random() < 0.6 else rng.randint(0, len(lines))
        )
        kind = rng.random()
        new = [f"edit {rng.randint(0, 99)}".encode() for _ in range(rng.randint(1, 3))]
        if kind < 0.4:
            lines[at:at] = new  # insert
        elif kind < 0.8:
            lines[at : at + rng.randint(1, 2)] = new  # replace
        else:
            del lines[at : at + rng.randint(1, 2)]
    return b"".join(line + b"\n" for line in lines)


def change(rng: random.Random, tree: Tree, anchors: list[int], side: str) -> Tree:
    out = dict(tree)
    for _ in range(rng.randint(1, 8)):
        files = sorted(out)
        if not files:
            break
        path = rng.choice(files)
        mode, data = out[path]
        roll = rng.random()
        if roll < 0.35:
            out[path] = (mode, edit(rng, data, anchors))
        elif roll < 0.55:  # rename, maybe edited, maybe to another directory
            name = path.rsplit("/", 1)[-1]
            target = rng.choice(DIRS) + (name if rng.random() < 0.5 else f"{side}-{name}")
            if target not in out:
                del out[path]
                out[target] = (mode, edit(rng, data, anchors) if rng.random() < 0.5 else data)
        elif roll < 0.62:
            del out[path]
        elif roll < 0.72:  # a new file, sometimes much like an existing one
            target = rng.choice(DIRS) + f"new-{side}-{rng.randint(0, 3)}.txt"
            if target not in out:
                out[target] = (
                    0o100644,
                    edit(rng, data, anchors) if rng.random() < 0.5 else new_file(rng, target),
                )
        elif roll < 0.77:
            out[path] = (0o100755 if mode == 0o100644 else 0o100644, data)
        elif roll < 0.82:  # a file becomes a directory
            if not any(p.startswith(path + "/") for p in out):
                del out[path]
                out[f"{path}/inner.txt"] = (mode, data)
        elif roll < 0.9:  # a whole directory moves
            directory = path.rsplit("/", 1)[0] + "/" if "/" in path else ""
            if directory:
                moved = "moved-" + directory.strip("/").replace("/", "-") + "/"
                for p in [p for p in out if p.startswith(directory)]:
                    if moved + p[len(directory) :] not in out:
                        out[moved + p[len(directory) :]] = out.pop(p)
        else:
            out[path] = (mode, data + b"appended by " + side.encode() + b"\n")
    return _without_clashes(out)


def _without_clashes(tree: Tree) -> Tree:
    """``tree`` without the files that lie where a directory also is."""
    dirs = {p.rsplit("/", i)[0] for p in tree for i in range(1, p.count("/") + 1)}
    return {p: e for p, e in tree.items() if p not in dirs}


def base_tree(rng: random.Random) -> Tree:
    tree: Tree = {}
    for i in range(rng.randint(4, 9)):
        path = rng.choice(DIRS) + f"file{i}.txt"
        tree[path] = (0o100644, new_file(rng, path))
    return tree


def merged_by_choice(rng: random.Random, base: Tree, ours: Tree, theirs: Tree) -> Tree:
    """A merge result made by hand: each path from one side or the other."""
    out = {}
    for path in sorted(ours.keys() | theirs.keys()):
        pick = ours.get(path) if rng.random() < 0.5 else theirs.get(path)
        if pick is None:
            pick = ours.get(path) or theirs.get(path)
        if pick is not None:
            out[path] = pick
    return _without_clashes(out)


def history(repo: Repo, rng: random.Random, criss_cross: bool) -> tuple[bytes, bytes]:
    """A generated history; returns (main's head, topic's head)."""
    tree = base_tree(rng)
    anchors = [rng.randint(0, 10) for _ in range(2)]
    base = commit(repo, tree, when=1)
    main_tree = change(rng, tree, anchors, "main")
    topic_tree = change(rng, tree, anchors, "topic")
    main = commit(repo, main_tree, [base], when=2)
    topic = commit(repo, topic_tree, [base], when=3)
    if criss_cross:
        main_merged = merged_by_choice(rng, tree, main_tree, topic_tree)
        topic_merged = merged_by_choice(rng, tree, topic_tree, main_tree)
        main2 = commit(repo, main_merged, [main, topic], when=4)
        topic2 = commit(repo, topic_merged, [topic, main], when=5)
        main = commit(repo, change(rng, main_merged, anchors, "main"), [main2], when=6)
        topic = commit(repo, change(rng, topic_merged, anchors, "topic"), [topic2], when=7)
    return main, topic


def check(repo: Repo, path: Path, seed: int, criss_cross: bool) -> tuple[bool, bool]:
    """One generated merge, compared with git's; (conflicted, had renames or several bases).
    A history git itself fails to merge (an assertion in merge-ort) is left out."""
    rng = random.Random(seed)
    main, topic = history(repo, rng, criss_cross)
    try:
        tree, conflicts = git_merge_tree(path, main, topic)
    except GitFailed:
        return False, False
    plan = plan_merge(repo, topic, main, labels=(main.decode(), topic.decode()))
    assert set(plan.conflicts) == conflicts, seed
    assert our_tree(plan) == tree, seed
    return bool(conflicts), any(f.renamed_from for f in plan.files) or plan.base is None


def run_seeds(repo: Repo, path: Path, seeds: range, criss_cross: bool) -> None:
    outcomes = [check(repo, path, seed, criss_cross) for seed in seeds]
    assert sum(c for c, _ in outcomes) > len(outcomes) // 5  # conflicts were compared
    assert sum(r for _, r in outcomes) > len(outcomes) // 10  # renames/virtual bases were


def test_generated_merges_match_git(repo: Repo, repo_path: Path) -> None:
    run_seeds(repo, repo_path, range(150), criss_cross=False)


def test_generated_criss_cross_merges_match_git(repo: Repo, repo_path: Path) -> None:
    run_seeds(repo, repo_path, range(1000, 1060), criss_cross=True)


# bounded by default, for a suite that stays fast; more with COLLAB_MERGE_SEEDS
MANY_SEEDS = int(os.environ.get("COLLAB_MERGE_SEEDS", "600"))


@pytest.mark.slow
def test_many_generated_merges_match_git(repo: Repo, repo_path: Path) -> None:
    run_seeds(repo, repo_path, range(10_000, 10_000 + MANY_SEEDS), criss_cross=False)
    run_seeds(repo, repo_path, range(20_000, 20_000 + MANY_SEEDS // 4), criss_cross=True)
