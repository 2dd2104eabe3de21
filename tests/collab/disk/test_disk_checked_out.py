"""Another branch, or an older commit, checked out in a synced tree (``git switch``, ``git
checkout HEAD~2``): its files are not edits of the synced branch. The sync pauses, saying so,
and goes on once the branch is checked out again; a start on a tree with another branch
checked out is refused."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from conftest import MakeTree, blob, until
from gitcli import git
from test_disk_git import other_clone, tree_files

from collab import Client, CollabServer
from collab.disk import WorkingTree
from collab.disk.checkout import GitError

README = "# Demo\n\nHello from the demo repository.\n"


def events(tree: WorkingTree, kind: str) -> list[dict[str, object]]:
    return tree.events.of(kind)  # type: ignore[attr-defined,no-any-return]


async def feature_branch(server: CollabServer, tmp_path: Path) -> None:
    """``feature``: main with another README, ``docs/unicode.txt`` deleted, ``feat.txt`` added."""
    work = await asyncio.to_thread(other_clone, server, tmp_path)
    await asyncio.to_thread(git, work, "checkout", "-q", "-b", "feature")
    (work / "README.md").write_text("FEATURE README\n")
    (work / "docs" / "unicode.txt").unlink()
    (work / "feat.txt").write_text("feature only\n")
    await asyncio.to_thread(git, work, "add", "-A")
    await asyncio.to_thread(git, work, "commit", "-qm", "feature work")
    await asyncio.to_thread(git, work, "push", "-q", "origin", "feature")


async def test_another_branch_checked_out_pauses_the_sync_until_the_branch_is_again(
    server: CollabServer, make_tree: MakeTree, tmp_path: Path
) -> None:
    """``git switch feature`` in a tree synced with main: main keeps its files (feature's
    README, deletion and new file are not main's edits), bob's typing in main does not go
    into feature's files, and the sync says it is paused. ``git switch main``: it goes on,
    bob's typing comes to disk and a save goes live again."""
    await feature_branch(server, tmp_path)
    root = tmp_path / "wt"
    tree = make_tree(root)
    await tree.start()
    await asyncio.to_thread(
        git, root, "fetch", "-q", str(server.config.repos / "demo"), "feature:feature"
    )
    async with Client(server.url, user="bob") as bob:
        doc = await bob.open("demo/main:README.md")
        await asyncio.to_thread(git, root, "switch", "-q", "feature")
        doc.insert(len(str(doc.text)), "typed by bob\n")
        await bob.flush()
        await asyncio.sleep(1.5)  # (the syncer had time to send, or to write)
        await tree.wait_idle()
        await bob.commit("demo", "main")
        assert str(doc.text) == README + "typed by bob\n"
        assert blob(server, "main:README.md") == (README + "typed by bob\n").encode()
        assert "docs/unicode.txt" in tree_files(server) and "feat.txt" not in tree_files(server)
        assert (root / "README.md").read_text() == "FEATURE README\n"
        assert git(root, "status", "--porcelain") == ""  # feature's files, as git wrote them
        assert events(tree, "paused")[0]["checked_out"] == "feature"
        assert "paused until main is checked out again" in str(events(tree, "paused")[0])

        await asyncio.to_thread(git, root, "switch", "-q", "main")
        await until(lambda: events(tree, "resumed"))
        await until(lambda: (root / "README.md").read_text() == README + "typed by bob\n")
        await tree.wait_idle()
        assert (root / "docs" / "unicode.txt").exists() and not (root / "feat.txt").exists()
        (root / "src" / "app.py").write_text("print('saved on main')\n")
        app = await bob.open("demo/main:src/app.py")
        await app.wait_for(lambda text: text == "print('saved on main')\n")
        await tree.wait_idle()
        await until(lambda: git(root, "status", "--porcelain", "--untracked-files=no") == "")
    assert [e["event"] for e in tree.events if e["event"] in ("paused", "resumed")] == [  # type: ignore[attr-defined]
        "paused",
        "resumed",
    ]


async def test_an_older_commit_checked_out_takes_nothing_back_at_the_server(
    server: CollabServer, make_tree: MakeTree, tmp_path: Path
) -> None:
    """``git checkout HEAD~2`` (a detached HEAD) to look at an older state: the two commits
    since stay on main, for everyone; ``git checkout main`` brings the tree back to them."""
    root = tmp_path / "wt"
    tree = make_tree(root)
    await tree.start()
    demo = server.config.repos / "demo"
    async with Client(server.url, user="bob") as bob:
        doc = await bob.open("demo/main:README.md")
        for n in range(2):
            doc.insert(len(str(doc.text)), f"bob's commit {n}\n")
            await bob.flush()
            await bob.commit("demo", "main")
        head = git(demo, "rev-parse", "main").strip()
        await until(lambda: git(root, "rev-parse", "HEAD").strip() == head)
        await tree.wait_idle()
        await asyncio.to_thread(git, root, "checkout", "-q", "HEAD~2")
        await asyncio.sleep(1.5)
        await tree.wait_idle()
        await bob.commit("demo", "main")
        assert git(demo, "rev-parse", "main").strip() == head
        assert str(doc.text) == README + "bob's commit 0\nbob's commit 1\n"
        assert (root / "README.md").read_text() == README
        assert events(tree, "paused")[0]["checked_out"] == "a detached HEAD"
        await asyncio.to_thread(git, root, "checkout", "-q", "main")
        await until(lambda: events(tree, "resumed"))
        await tree.wait_idle()
        assert (root / "README.md").read_text() == str(doc.text)
        await bob.commit("demo", "main")
        assert git(demo, "rev-parse", "main").strip() == head


async def test_a_restart_with_another_branch_than_the_one_checked_out_is_refused(
    server: CollabServer, make_tree: MakeTree, tmp_path: Path
) -> None:
    """A tree synced with main before, started again with ``--branch feature`` while it has
    main checked out: feature's files would land in main's checkout as changes of main, so
    it is refused as a first start is. With feature checked out, it is synced from feature's
    files (not main's bases): git in the tree then sees nothing changed."""
    await feature_branch(server, tmp_path)
    root = tmp_path / "wt"
    tree = make_tree(root)
    await tree.start()
    await tree.stop()
    tree = make_tree(root, branch="feature")
    with pytest.raises(GitError, match="has main checked out, not feature"):
        await tree.start()
    await tree.stop()
    assert (root / "README.md").read_text() == README
    assert git(root, "status", "--porcelain") == ""
    await asyncio.to_thread(
        git, root, "fetch", "-q", str(server.config.repos / "demo"), "feature:feature"
    )
    await asyncio.to_thread(git, root, "switch", "-q", "feature")
    tree = make_tree(root, branch="feature")
    await tree.start()
    await tree.wait_idle()
    assert (root / "README.md").read_text() == "FEATURE README\n"
    assert not (root / "docs" / "unicode.txt").exists()
    assert git(root, "status", "--porcelain") == ""
    assert not events(tree, "conflict")
    await tree.stop()
    assert blob(server, "feature:README.md") == b"FEATURE README\n"
    assert "docs/unicode.txt" in tree_files(server)  # main's
