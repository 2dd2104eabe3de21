"""What has no live edit goes through git: deletions and renames both ways, binary files, and
a burst of a thousand changed files (another branch's files checked out inside the tree)."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import MakeTree, blob, until
from eventwait import Events
from gitcli import git
from servers import make_config

from collab import Client, CollabServer
from collab.disk import WorkingTree
from collab.disk.checkout import GitError
from gitsync.objects.commits import author_line

BINARY = bytes(range(256)) * 8


def tree_files(server: CollabServer, branch: str = "main") -> set[str]:
    out = git(server.config.repos / "demo", "ls-tree", "-r", "--name-only", branch)
    return set(out.split())


def other_clone(server: CollabServer, tmp_path: Path) -> Path:
    """A plain git clone of the server's ``demo``, through its git bridge, as bob."""
    work = tmp_path / "other"
    url = server.url.replace("ws://", "http://bob:dev@") + "/git/demo.git"
    git(tmp_path, "clone", "-q", url, str(work))
    return work


async def test_delete_and_rename_on_disk_reach_the_branch(
    server: CollabServer, make_tree: MakeTree, tmp_path: Path
) -> None:
    root = tmp_path / "wt"
    tree = make_tree(root)
    await tree.start()
    os.unlink(root / "README.md")
    os.rename(root / "src" / "app.py", root / "src" / "main.py")
    await until(
        lambda: "src/main.py" in tree_files(server) and "README.md" not in tree_files(server)
    )
    async with Client(server.url, user="bob") as bob:
        await tree.wait_idle()
        await bob.commit("demo", "main")
        files = tree_files(server)
        assert "README.md" not in files and "src/app.py" not in files
        assert blob(server, "main:src/main.py") == b"print('hello')\n"
        doc = await bob.open("demo/main:src/main.py")
        assert str(doc.text) == "print('hello')\n"
    assert not (root / "README.md").exists()  # nothing brought it back
    assert [e["side"] for e in tree.events.of("delete")] == ["live", "live"]  # type: ignore[attr-defined]


async def test_a_rename_on_disk_is_one_commit_that_tells_the_old_paths_editors(
    server: CollabServer, make_tree: MakeTree, tmp_path: Path
) -> None:
    """``mv`` of a file someone has open live: the branch gets one commit that git reads as
    a rename, the editor of the old path is told where it went (``renamed``), and what they
    typed there and had not committed yet is at the new path."""
    root = tmp_path / "wt"
    tree = make_tree(root)
    await tree.start()
    async with Client(server.url, user="bob") as bob:
        await bob.join("demo")  # (his own branch first: making it commits main)
        await bob.subscribe("events.subscribe", repo="demo")
        before = git(server.config.repos / "demo", "rev-parse", "main").strip()
        doc = await bob.open("demo/main:src/app.py")
        doc.insert(0, "# typed live\n")
        await bob.flush()  # durable, not committed yet
        await tree.wait_idle()
        os.rename(root / "src" / "app.py", root / "src" / "main.py")
        event = await Events(bob).wait_for("ref", cause="external", timeout=20)
        assert event["renamed"] == {"src/app.py": "src/main.py"}
        await doc.wait_for(lambda text: text == "")
        moved = await bob.open("demo/main:src/main.py")
        assert str(moved.text) == "# typed live\nprint('hello')\n"
        await tree.wait_idle()
        await bob.commit("demo", "main")
    demo = server.config.repos / "demo"
    renames = git(demo, "log", "-M", "--format=", "--name-status", f"{before}..main")
    assert "R100\tsrc/app.py\tsrc/main.py" in renames.splitlines(), renames
    assert blob(server, "main:src/main.py") == b"# typed live\nprint('hello')\n"
    assert "src/app.py" not in tree_files(server)
    await until(lambda: (root / "src" / "main.py").read_bytes() == blob(server, "main:src/main.py"))
    assert not (root / "src" / "app.py").exists()
    assert [e.get("renamed_to") for e in tree.events.of("delete")] == ["src/main.py"]  # type: ignore[attr-defined]


async def test_a_rename_on_disk_drops_no_edit_committed_to_the_old_path_meanwhile(
    repos: Path, tmp_path: Path
) -> None:
    """Someone types in the old path and their edits are committed while the rename waits
    out its settle time: the deletion is of the text the disk had, not of theirs, so it is
    not made; their text is kept (at the old path, as a change live that a deletion on disk
    does not take), and the new path holds the file the disk has."""
    async with CollabServer(make_config(repos, tmp_path / "data", commit_idle=0.1)) as server:
        root = tmp_path / "wt"
        tree = WorkingTree(root, server.url, "demo", "main", user="alice")
        await tree.start()
        try:
            async with Client(server.url, user="bob") as bob:
                await bob.join("demo")
                doc = await bob.open("demo/main:src/app.py")
                await tree.wait_idle()
                os.rename(root / "src" / "app.py", root / "src" / "main.py")
                await asyncio.sleep(0.02)
                doc.insert(0, "# bob\n")
                await bob.flush()
                await bob.commit("demo", "main")  # before the rename's settle time is out
                await asyncio.sleep(1)
                await tree.wait_idle()
                await bob.commit("demo", "main")
        finally:
            await tree.stop()
        files = tree_files(server)
        kept = {path: blob(server, f"main:{path}") for path in files if path.startswith("src/")}
        assert kept["src/app.py"] == b"# bob\nprint('hello')\n", kept
        assert kept["src/main.py"] == b"print('hello')\n", kept


async def test_a_folder_of_many_files_moved_on_disk_is_renames_on_the_branch(
    server: CollabServer, make_tree: MakeTree, tmp_path: Path
) -> None:
    """``mv`` of a folder of 60 files: each file is a rename on the branch, whichever of
    its two paths is synced first."""
    root = tmp_path / "wt"
    tree = make_tree(root)
    await tree.start()
    (root / "many").mkdir()
    for n in range(60):
        (root / "many" / f"f{n:02}.txt").write_text(f"file {n}\n")
    await until(lambda: sum(p.startswith("many/") for p in tree_files(server)) == 60, timeout=60)
    await tree.wait_idle(timeout=60)
    before = git(server.config.repos / "demo", "rev-parse", "main").strip()
    os.rename(root / "many", root / "moved")
    await until(lambda: sum(p.startswith("moved/") for p in tree_files(server)) == 60, timeout=60)
    await until(lambda: not any(p.startswith("many/") for p in tree_files(server)), timeout=60)
    await tree.wait_idle(timeout=60)
    log = git(
        server.config.repos / "demo", "log", "-M", "--format=", "--name-status", f"{before}..main"
    )
    renamed = [line for line in log.splitlines() if line.startswith("R100\tmany/")]
    assert len(renamed) == 60, log
    assert blob(server, "main:moved/f07.txt") == b"file 7\n"


async def test_a_save_that_moves_the_file_aside_first_is_no_rename(
    server: CollabServer, make_tree: MakeTree, tmp_path: Path
) -> None:
    """An editor that keeps a backup moves the file aside (a name no filter knows) and
    writes it anew: for a moment the file is gone and its old text is under another name,
    which is no rename: the file is saved, and the backup is a new file."""
    root = tmp_path / "wt"
    tree = make_tree(root)
    await tree.start()
    os.replace(root / "src" / "app.py", root / "src" / "app.py.orig")
    await asyncio.sleep(0.05)
    (root / "src" / "app.py").write_text("print('saved')\n")
    await until(lambda: "src/app.py.orig" in tree_files(server), timeout=20)
    async with Client(server.url, user="bob") as bob:
        doc = await bob.open("demo/main:src/app.py")
        await doc.wait_for(lambda text: text == "print('saved')\n")
        await tree.wait_idle()
        await bob.commit("demo", "main")
    assert blob(server, "main:src/app.py") == b"print('saved')\n"
    assert blob(server, "main:src/app.py.orig") == b"print('hello')\n"
    assert not [e for e in tree.events.of("delete")]  # type: ignore[attr-defined]


async def test_a_directory_moved_on_disk_moves_on_the_branch(
    server: CollabServer, make_tree: MakeTree, tmp_path: Path
) -> None:
    """``mv src lib``: the branch loses ``src/app.py`` and gains ``lib/app.py``."""
    root = tmp_path / "wt"
    tree = make_tree(root)
    await tree.start()
    before = git(server.config.repos / "demo", "rev-parse", "main").strip()
    os.rename(root / "src", root / "lib")
    await until(
        lambda: "lib/app.py" in tree_files(server) and "src/app.py" not in tree_files(server)
    )
    async with Client(server.url, user="bob") as bob:
        await tree.wait_idle()
        await bob.commit("demo", "main")
    files = tree_files(server)
    assert "lib/app.py" in files and "src/app.py" not in files
    assert blob(server, "main:lib/app.py") == b"print('hello')\n"
    assert not (root / "src").exists()  # nothing brought it back
    renames = git(
        server.config.repos / "demo", "log", "-M", "--format=", "--name-status", f"{before}..main"
    )
    assert "R100\tsrc/app.py\tlib/app.py" in renames.splitlines(), renames  # as git mv does


async def test_a_new_empty_file_reaches_the_branch_and_then_goes_live(
    server: CollabServer, make_tree: MakeTree, tmp_path: Path
) -> None:
    """An empty new file (a package's ``__init__.py``) is committed, though no live edit can
    make it; text written into it later goes live like any other."""
    root = tmp_path / "wt"
    tree = make_tree(root)
    await tree.start()
    (root / "pkg").mkdir()
    (root / "pkg" / "__init__.py").write_bytes(b"")
    (root / "pkg" / "mod.py").write_text("x = 1\n")
    await until(lambda: {"pkg/__init__.py", "pkg/mod.py"} <= tree_files(server))
    assert blob(server, "main:pkg/__init__.py") == b""
    await tree.wait_idle()
    (root / "pkg" / "__init__.py").write_text("from .mod import x\n")
    async with Client(server.url, user="bob") as bob:
        doc = await bob.open("demo/main:pkg/__init__.py")
        await doc.wait_for(lambda text: text == "from .mod import x\n")
        await tree.wait_idle()
        await bob.commit("demo", "main")
    assert blob(server, "main:pkg/__init__.py") == b"from .mod import x\n"


async def test_the_commits_the_syncer_makes_are_by_the_person_it_syncs_for(
    server: CollabServer, make_tree: MakeTree, tmp_path: Path
) -> None:
    """A file no live edit can make (an empty one) and a rename are committed by the syncer:
    their author is the person it syncs for, named as the commits of their live edits name
    them, and their committer the syncer."""
    root = tmp_path / "wt"
    tree = make_tree(root)
    await tree.start()
    (root / "empty.txt").write_bytes(b"")
    await until(lambda: "empty.txt" in tree_files(server))
    await tree.wait_idle()
    (root / "empty.txt").rename(root / "moved.txt")
    await until(lambda: "moved.txt" in tree_files(server) and "empty.txt" not in tree_files(server))
    demo = server.config.repos / "demo"
    for path in ("empty.txt", "moved.txt"):
        made = git(demo, "log", "-1", "--format=%an <%ae>%n%cn", "main", "--", path).splitlines()
        assert made == [author_line("alice"), "collab sync"], (path, made)


async def test_a_file_whose_name_the_server_refuses_is_reported_once_and_left_out(
    server: CollabServer, make_tree: MakeTree, tmp_path: Path
) -> None:
    """A file named as no branch may hold one (a backslash, from a Windows copy): the
    syncer starts all the same, reports the file once, and syncs the others."""
    root = tmp_path / "wt"
    tree = make_tree(root)
    await tree.start()
    await tree.stop()
    (root / "notes\\draft.txt").write_text("from windows\n")
    (root / "README.md").write_text("# Demo, edited while stopped\n")
    tree = make_tree(root)
    await asyncio.wait_for(tree.start(), 20)
    (root / "again\\draft.txt").write_text("again\n")
    async with Client(server.url, user="bob") as bob:
        doc = await bob.open("demo/main:README.md")
        await doc.wait_for(lambda text: text == "# Demo, edited while stopped\n")
    await asyncio.sleep(2.5)  # a retry would come every second
    errors = [e for e in tree.events.of("error")]  # type: ignore[attr-defined]
    assert sorted(e["path"] for e in errors) == ["again\\draft.txt", "notes\\draft.txt"], errors
    assert all("not synced" in e["message"] for e in errors)
    await tree.wait_idle()


async def test_delete_and_rename_at_the_server_reach_the_disk(
    server: CollabServer, make_tree: MakeTree, tmp_path: Path
) -> None:
    root = tmp_path / "wt"
    tree = make_tree(root)
    await tree.start()
    work = await asyncio.to_thread(other_clone, server, tmp_path)
    await asyncio.to_thread(git, work, "mv", "src/app.py", "src/renamed.py")
    await asyncio.to_thread(git, work, "rm", "-q", "README.md")
    await asyncio.to_thread(git, work, "commit", "-qm", "rename and delete")
    await asyncio.to_thread(git, work, "push", "-q", "origin", "main")
    await until(
        lambda: (root / "src" / "renamed.py").exists() and not (root / "README.md").exists()
    )
    assert not (root / "src" / "app.py").exists()
    assert (root / "src" / "renamed.py").read_text() == "print('hello')\n"
    await tree.wait_idle()


async def test_binary_files_both_ways(
    server: CollabServer, make_tree: MakeTree, tmp_path: Path
) -> None:
    root = tmp_path / "wt"
    tree = make_tree(root)
    await tree.start()
    (root / "logo.png").write_bytes(BINARY)
    await until(lambda: "logo.png" in tree_files(server))
    assert blob(server, "main:logo.png") == BINARY
    work = await asyncio.to_thread(other_clone, server, tmp_path)
    (work / "logo.png").write_bytes(BINARY[::-1])
    (work / "data.bin").write_bytes(b"\0\1\2" * 100)
    await asyncio.to_thread(git, work, "add", "-A")
    await asyncio.to_thread(git, work, "commit", "-qm", "binaries")
    await asyncio.to_thread(git, work, "push", "-q", "origin", "main")
    await until(lambda: (root / "logo.png").read_bytes() == BINARY[::-1])
    await until(lambda: (root / "data.bin").exists())
    assert (root / "data.bin").read_bytes() == b"\0\1\2" * 100
    await tree.wait_idle()
    assert blob(server, "main:logo.png") == BINARY[::-1]


async def test_a_file_saved_as_binary_just_after_a_live_edit_is_no_conflict(
    repos: Path, tmp_path: Path
) -> None:
    """Bob types, the syncer writes it to the file, and the file is saved in Latin-1 (not
    UTF-8: binary to the sync) before the server committed bob's edit: the disk version was
    made over his edit, not against a change at the server. It is committed, with no
    conflict reported, after his edit."""
    async with CollabServer(make_config(repos, tmp_path / "data", commit_idle=30)) as server:
        root = tmp_path / "wt"
        reported: list[dict[str, Any]] = []
        tree = WorkingTree(root, server.url, "demo", "main", user="alice", report=reported.append)
        await tree.start()
        try:
            async with Client(server.url, user="bob") as bob:
                doc = await bob.open("demo/main:docs/unicode.txt")
                doc.insert(0, "BOB ")
                path = root / "docs" / "unicode.txt"
                await until(lambda: path.read_text().startswith("BOB "))
                latin = "BOB café, latin\n".encode("latin-1")
                path.write_bytes(latin)
                await until(lambda: blob(server, "main:docs/unicode.txt") == latin)
                await tree.wait_idle()
        finally:
            await tree.stop()
        assert not [event for event in reported if event["event"] == "conflict"], reported
        revisions = git(repos / "demo", "rev-list", "main", "--", "docs/unicode.txt").split()
        versions = [blob(server, f"{rev}:docs/unicode.txt") for rev in revisions]
        assert "BOB héllo wörld, 世界, 🎉 emoji\n".encode() in versions  # bob's, committed


async def test_a_file_made_a_folder_and_a_file_again_is_no_conflict(
    server: CollabServer, make_tree: MakeTree, tmp_path: Path
) -> None:
    """``f`` becomes a folder (``f/inner.txt``), then a file again while the sync of ``f``
    gives it time to come back: committing ``f/inner.txt`` took ``f`` off the branch, as it
    is off the disk, and the file made again is no change made over a deletion at the
    server."""
    root = tmp_path / "wt"
    tree = make_tree(root, settle=2.0)
    await tree.start()
    (root / "f").write_text("a file\n")
    await until(lambda: "f" in tree_files(server), 20)
    await tree.wait_idle()
    os.unlink(root / "f")
    (root / "f").mkdir()
    (root / "f" / "inner.txt").write_text("inner\n")
    await until(lambda: "f/inner.txt" in tree_files(server), 20)
    (root / "f" / "inner.txt").unlink()  # (within the settle time of f's sync)
    (root / "f").rmdir()
    (root / "f").write_text("a file again\n")
    await until(lambda: "f" in tree_files(server), 20)
    await tree.wait_idle()
    async with Client(server.url, user="bob") as bob:
        await bob.commit("demo", "main")
    assert blob(server, "main:f") == b"a file again\n"
    assert "f/inner.txt" not in tree_files(server)
    assert not tree.events.of("conflict"), tree.events.of("conflict")  # type: ignore[attr-defined]


async def test_checkout_of_another_branchs_files_inside_the_tree(
    server: CollabServer, make_tree: MakeTree, tmp_path: Path
) -> None:
    """``git checkout wide -- .`` in the tree (wide's files, main still checked out) changes
    a thousand files at once; each reaches the live branch exactly as it is on disk, and the
    branch in git ends equal to wide."""
    work = await asyncio.to_thread(other_clone, server, tmp_path)
    await asyncio.to_thread(git, work, "checkout", "-q", "-b", "wide")
    for n in range(1000):
        folder = work / "gen" / f"d{n % 20:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{n:04d}.txt").write_text(f"generated {n}\n" * 3)
    (work / "README.md").write_text("# Wide\n")
    await asyncio.to_thread(git, work, "add", "-A")
    await asyncio.to_thread(git, work, "commit", "-qm", "a thousand files")
    await asyncio.to_thread(git, work, "push", "-q", "origin", "wide")
    root = tmp_path / "wt"
    tree = make_tree(root)
    await tree.start()
    server_repo = str(server.config.repos / "demo")
    await asyncio.to_thread(git, root, "fetch", "-q", server_repo, "wide:wide")
    await asyncio.to_thread(git, root, "checkout", "-q", "wide", "--", ".")
    async with asyncio.timeout(90):
        while True:
            await tree.wait_idle(timeout=90)
            await asyncio.sleep(0.5)
            if tree.idle.is_set():
                break
    async with Client(server.url, user="bob") as bob:
        await bob.commit("demo", "main")
    diff = git(server.config.repos / "demo", "diff", "--stat", "main", "wide")
    assert diff == "", diff
    assert tree.counters.writes == 0  # the burst came from disk: nothing written back


def own_project(root: Path, origin: str | None) -> None:
    """A project of the user's own, unrelated to ``demo``: a commit and uncommitted work."""
    root.mkdir()
    git(root, "init", "-q")
    if origin is not None:
        git(root, "remote", "add", "origin", origin)
    (root / "README.md").write_text("# My project\n")
    (root / "main.py").write_text("mine = 1\n")
    git(root, "add", "-A")
    git(root, "-c", "user.name=me", "-c", "user.email=me@example.com", "commit", "-qm", "init")
    (root / "main.py").write_text("mine = 1\nuncommitted = 2\n")


@pytest.mark.parametrize("origin", ["https://example.com/me/project.git", None])
async def test_a_checkout_of_another_project_is_refused_untouched(
    server: CollabServer, make_tree: MakeTree, tmp_path: Path, origin: str | None
) -> None:
    """A directory that is another project's checkout (another origin, or none and a history
    unrelated to the branch's) is refused with a clear error: its files, its origin and the
    branch stay as they were."""
    root = tmp_path / "mine"
    await asyncio.to_thread(own_project, root, origin)
    before = tree_files(server)
    tree = make_tree(root)
    with pytest.raises(GitError, match="empty directory") as refused:
        await tree.start()
    assert str(root) in str(refused.value)
    await tree.stop()
    assert (root / "README.md").read_text() == "# My project\n"
    assert (root / "main.py").read_text() == "mine = 1\nuncommitted = 2\n"
    remotes = git(root, "remote", "-v")
    assert (origin or "") in remotes and (origin is not None or not remotes.strip())
    assert tree_files(server) == before
    assert "main.py" not in before


async def test_a_clone_made_with_git_is_adopted(
    server: CollabServer, make_tree: MakeTree, tmp_path: Path
) -> None:
    """A clone of the repository made with the git CLI (through the git bridge) is adopted:
    what was edited in it before the syncer started reaches the branch."""
    work = await asyncio.to_thread(other_clone, server, tmp_path)
    (work / "README.md").write_text("# Demo, edited before the sync\n")
    tree = make_tree(work)
    await tree.start()
    async with Client(server.url, user="bob") as bob:
        doc = await bob.open("demo/main:README.md")
        await until(lambda: str(doc.text) == "# Demo, edited before the sync\n")


async def test_a_clone_with_another_branch_checked_out_is_refused_until_it_has_the_branch(
    server: CollabServer, make_tree: MakeTree, tmp_path: Path
) -> None:
    """A clone on ``main``, synced with ``topic`` for the first time: the sync would write
    topic's files into main's checkout, so it is refused, saying what to check out; with
    topic checked out, it is adopted."""
    async with Client(server.url, user="bob") as bob:
        await bob.call("branch.create", repo="demo", name="topic")
        doc = await bob.open("demo/topic:README.md")
        doc.insert(0, "on topic\n")
        await bob.flush()
        await bob.commit("demo", "topic")
    work = await asyncio.to_thread(other_clone, server, tmp_path)
    before = (work / "README.md").read_text()
    tree = make_tree(work, branch="topic")
    with pytest.raises(GitError, match="has main checked out, not topic") as refused:
        await tree.start()
    assert "checkout topic" in str(refused.value)
    await tree.stop()
    assert (work / "README.md").read_text() == before
    await asyncio.to_thread(git, work, "fetch", "-q", "origin")  # (the server is on this loop)
    git(work, "checkout", "-q", "topic")
    tree = make_tree(work, branch="topic")
    await tree.start()
    await tree.wait_idle()
    assert (work / "README.md").read_text().startswith("on topic\n")


async def test_a_clone_with_commits_the_server_lacks_is_refused_until_they_are_off_the_branch(
    server: CollabServer, make_tree: MakeTree, tmp_path: Path
) -> None:
    """A clone with a commit of its own not pushed, synced for the first time while the
    branch moved at the server: the sync would take the commit's changes out of the files
    (they are not the branch's), so it is refused, saying to push it or take it off the
    branch; taken off with its changes kept in the files, the sync sends them, and the
    server's change comes to disk beside them."""
    work = await asyncio.to_thread(other_clone, server, tmp_path)
    readme_file = work / "README.md"
    readme_file.write_text(readme_file.read_text() + "committed in the clone\n")
    git(work, "commit", "-qam", "mine, not pushed")
    mine = readme_file.read_text()
    async with Client(server.url, user="bob") as bob:
        app = await bob.open("demo/main:src/app.py")
        app.insert(0, "# typed at the server\n")
        await bob.flush()
        await bob.commit("demo", "main")
        tree = make_tree(work)
        with pytest.raises(
            GitError, match="has 1 commit on main that the server does not have"
        ) as refused:
            await tree.start()
        await tree.stop()
        assert readme_file.read_text() == mine
        assert not (work / ".git" / "collab-sync.sqlite").exists()
        shared = git(work, "rev-parse", "HEAD~1").strip()
        assert "push origin main), or take them off the branch" in str(refused.value)
        assert f"(git -C {work} reset {shared[:12]}, the last commit" in str(refused.value)
        await asyncio.to_thread(git, work, "reset", "-q", shared)
        tree = make_tree(work)
        await tree.start()
        readme = await bob.open("demo/main:README.md")
        await readme.wait_for(lambda text: text == mine)
        await tree.wait_idle()
    assert readme_file.read_text() == mine
    assert (work / "src" / "app.py").read_text() == "# typed at the server\nprint('hello')\n"


@pytest.mark.parametrize("moving", [False, True], ids=["quiet", "branch-moves-under-the-push"])
async def test_a_large_text_file_changed_on_disk_and_live_keeps_both(
    server: CollabServer, make_tree: MakeTree, tmp_path: Path, moving: bool
) -> None:
    """A text file over the syncer's ``max_file`` goes through git; changed on disk while
    the syncer was away, and live meanwhile, the two are merged as git would: neither side's
    lines are dropped.

    ``moving``: bob types and commits again while the syncer pushes the merge (the push is
    refused: the file moved). The next merge is against the text the file then holds: each
    side's lines once, no conflict (merged against the old base, the lines of the first
    merge conflicted with themselves, in nested markers)."""
    root = tmp_path / "wt"
    lines = "".join(f"line {i:03d} of a file the syncer takes through git\n" for i in range(60))
    tree = make_tree(root, max_file=1000)
    await tree.start()
    (root / "big.txt").write_text(lines)
    await until(lambda: "big.txt" in tree_files(server))
    await tree.wait_idle()
    assert blob(server, "main:big.txt") == lines.encode()
    await tree.stop()
    async with Client(server.url, user="bob") as bob:
        doc = await bob.open("demo/main:big.txt")
        doc.insert(0, "typed live by bob\n")
        await bob.flush()
        await bob.commit("demo", "main")
        (root / "big.txt").write_text(lines + "saved on disk\n")
        again = make_tree(root, max_file=1000)
        push = again._commit_by_git
        raced = False

        async def racing(path: str, data: bytes | None, *args: object) -> bool:
            nonlocal raced
            if not raced and path == "big.txt":
                raced = True  # the branch moves under the push
                doc.insert(0, "typed again\n")
                await bob.flush()
                await bob.commit("demo", "main")
            return await push(path, data, *args)

        if moving:
            again._commit_by_git = racing  # type: ignore[method-assign]
        await again.start()
        expected = "typed live by bob\n" + lines + "saved on disk\n"
        if moving:
            expected = "typed again\n" + expected
        await until(lambda: (root / "big.txt").read_text() == expected)
        await again.wait_idle()
        await doc.wait_for(lambda text: text == expected)
        assert raced == moving
    assert blob(server, "main:big.txt") == expected.encode()
    assert not again.events.of("conflict")  # type: ignore[attr-defined]


async def test_a_tree_synced_through_a_symbolic_link_sees_its_files_change(
    server: CollabServer, make_tree: MakeTree, tmp_path: Path
) -> None:
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    tree = make_tree(link)
    await tree.start()
    (link / "notes.txt").write_text("a new file\n")
    await until(lambda: "notes.txt" in tree_files(server))
    (real / "README.md").write_text("# Changed through the real path\n")
    await until(lambda: blob(server, "main:README.md") == b"# Changed through the real path\n")
    await tree.wait_idle()


async def test_git_in_the_tree_sees_the_branch_as_it_is_at_the_server(
    server: CollabServer, make_tree: MakeTree, tmp_path: Path
) -> None:
    """The checked-out branch and the index follow the branch at the server: ``git status``
    shows only what is not committed yet, and a commit made in the tree is left alone."""
    root = tmp_path / "wt"
    tree = make_tree(root)
    await tree.start()
    demo = server.config.repos / "demo"
    async with Client(server.url, user="bob") as bob:
        doc = await bob.open("demo/main:README.md")
        doc.insert(0, "typed by bob\n")
        await bob.flush()
        await bob.commit("demo", "main")
        head = git(demo, "rev-parse", "main").strip()
        await until(lambda: git(root, "rev-parse", "HEAD").strip() == head)
        await until(lambda: (root / "README.md").read_text().startswith("typed by bob\n"))
        await tree.wait_idle()
        assert git(root, "status", "--porcelain") == ""
        doc.insert(0, "not committed yet\n")
        await bob.flush()
        await until(lambda: (root / "README.md").read_text().startswith("not committed yet\n"))
        assert git(root, "status", "--porcelain").split() == ["M", "README.md"]
        # a commit of one's own in the tree: the branch there is not moved over it
        await asyncio.to_thread(git, root, "commit", "-qam", "mine")
        mine = git(root, "rev-parse", "HEAD").strip()
        await bob.commit("demo", "main")
        await until(lambda: git(demo, "rev-parse", "main").strip() != head)
        await tree.wait_idle()
        await asyncio.sleep(0.5)
        assert git(root, "rev-parse", "HEAD").strip() == mine


async def test_a_stop_waits_for_the_checkout_to_finish_following_the_branch(
    server: CollabServer, make_tree: MakeTree, tmp_path: Path
) -> None:
    """The syncer stopped while the checked-out branch and the index move to a new head: the
    stop waits for them (no git command is cut half way, or left running after it)."""
    root = tmp_path / "wt"
    tree = make_tree(root)
    await tree.start()
    checkout = tree._checkout
    assert checkout is not None
    moving = asyncio.Event()
    follow = checkout.follow

    async def slow_follow(head: str) -> None:
        moving.set()
        await asyncio.sleep(0.3)  # (a slow disk: the stop comes while it moves)
        await follow(head)

    checkout.follow = slow_follow  # type: ignore[method-assign]
    async with Client(server.url, user="bob") as bob:
        doc = await bob.open("demo/main:README.md")
        doc.insert(0, "typed by bob\n")
        await bob.flush()
        await bob.commit("demo", "main")
    head = git(server.config.repos / "demo", "rev-parse", "main").strip()
    await asyncio.wait_for(moving.wait(), 15)
    await tree.stop()
    assert git(root, "rev-parse", "HEAD").strip() == head
    assert git(root, "status", "--porcelain", "--untracked-files=no") == ""


async def test_the_checkout_follows_the_branch_while_someone_types_without_a_pause(
    server: CollabServer, make_tree: MakeTree, tmp_path: Path
) -> None:
    """Bob types on and on, never pausing: the tree is never quiet, yet the checked-out
    branch follows each commit at the server within moments, so that ``git checkout --
    FILE`` in the tree takes back only what is not committed yet, not others' commits."""
    root = tmp_path / "wt"
    tree = make_tree(root)
    await tree.start()
    demo = server.config.repos / "demo"
    async with Client(server.url, user="bob") as bob:
        doc = await bob.open("demo/main:README.md")
        typing = True

        async def typist() -> None:
            n = 0
            while typing:
                doc.insert(len(str(doc.text)), f"typed {n}\n")
                n += 1
                await asyncio.sleep(0.01)

        typed = asyncio.create_task(typist())
        try:
            await asyncio.sleep(0.5)
            await bob.commit("demo", "main")
            head = git(demo, "rev-parse", "main").strip()
            committed = git(demo, "show", "main:README.md")
            assert "typed 10\n" in committed
            started = asyncio.get_running_loop().time()
            await until(lambda: holds(root, head), 10)  # (the server commits on, too)
            assert typed.done() is False  # followed while bob typed on
            assert asyncio.get_running_loop().time() - started < 5
        finally:
            typing = False
            await typed
        await bob.flush()
        await tree.wait_idle()
        await asyncio.to_thread(git, root, "checkout", "--", "README.md")
        await tree.wait_idle()
        await until(lambda: str(doc.text) == (root / "README.md").read_text())
        assert str(doc.text).startswith(committed)  # what was committed stays


def holds(root: Path, commit: str) -> bool:
    """Whether the tree's checked-out branch holds ``commit``."""
    done = subprocess.run(
        ["git", "-C", str(root), "merge-base", "--is-ancestor", commit, "HEAD"],
        capture_output=True,
    )
    return done.returncode == 0


async def test_the_executable_bit_goes_both_ways(
    server: CollabServer, make_tree: MakeTree, tmp_path: Path
) -> None:
    demo = server.config.repos / "demo"

    def mode(path: str) -> str:
        return git(demo, "ls-tree", "main", path).split()[0]

    root = tmp_path / "wt"
    tree = make_tree(root)
    await tree.start()
    script = root / "src" / "app.py"
    script.chmod(0o755)  # made executable on disk
    await until(lambda: mode("src/app.py") == "100755")
    assert blob(server, "main:src/app.py") == script.read_bytes()
    (root / "run.sh").write_text("#!/bin/sh\necho run\n")  # new, and executable
    (root / "run.sh").chmod(0o755)
    await until(lambda: "run.sh" in tree_files(server) and mode("run.sh") == "100755", 20)
    await tree.wait_idle()

    work = await asyncio.to_thread(other_clone, server, tmp_path)
    await asyncio.to_thread(git, work, "update-index", "--chmod=-x", "src/app.py")
    await asyncio.to_thread(git, work, "update-index", "--chmod=+x", "README.md")
    (work / "bin").mkdir()
    (work / "bin" / "tool").write_text("#!/bin/sh\n")
    (work / "bin" / "tool").chmod(0o755)
    await asyncio.to_thread(git, work, "add", "bin/tool")
    await asyncio.to_thread(git, work, "commit", "-qm", "modes")
    await asyncio.to_thread(git, work, "push", "-q", "origin", "main")
    await until(lambda: os.access(root / "README.md", os.X_OK))
    await until(lambda: not os.access(script, os.X_OK))
    await until(
        lambda: (root / "bin" / "tool").exists() and os.access(root / "bin" / "tool", os.X_OK)
    )
    await tree.wait_idle()
    assert (mode("src/app.py"), mode("README.md"), mode("bin/tool")) == (
        "100644",
        "100755",
        "100755",
    )


async def test_symbolic_links_go_both_ways_as_git_keeps_them(
    server: CollabServer, make_tree: MakeTree, tmp_path: Path
) -> None:
    demo = server.config.repos / "demo"

    def entry(path: str) -> tuple[str, bytes]:
        return git(demo, "ls-tree", "main", path).split()[0], blob(server, f"main:{path}")

    root = tmp_path / "wt"
    tree = make_tree(root)
    await tree.start()
    (root / "readme-link").symlink_to("README.md")  # made on disk
    await until(lambda: "readme-link" in tree_files(server))
    assert entry("readme-link") == ("120000", b"README.md")

    work = await asyncio.to_thread(other_clone, server, tmp_path)
    (work / "docs" / "latest").symlink_to("unicode.txt")  # made at the server
    os.remove(work / "readme-link")
    (work / "readme-link").symlink_to("src/app.py")  # changed there
    await asyncio.to_thread(git, work, "add", "-A")
    await asyncio.to_thread(git, work, "commit", "-qm", "links")
    await asyncio.to_thread(git, work, "push", "-q", "origin", "main")
    await until(lambda: (root / "docs" / "latest").is_symlink())
    await until(lambda: os.readlink(root / "readme-link") == "src/app.py")
    assert os.readlink(root / "docs" / "latest") == "unicode.txt"
    await tree.wait_idle()

    os.remove(root / "docs" / "latest")  # a link made a file on disk
    (root / "docs" / "latest").write_text("now a file\n")
    await until(lambda: git(demo, "ls-tree", "main", "docs/latest").split()[:1] == ["100644"])
    assert blob(server, "main:docs/latest") == b"now a file\n"
    await tree.wait_idle()
    assert entry("readme-link") == ("120000", b"src/app.py")


async def test_git_work_in_the_tree_is_left_as_it_is(
    server: CollabServer, make_tree: MakeTree, tmp_path: Path
) -> None:
    """Something staged, or git's index in use: the checkout's branch and index stay where
    they are until the person is done."""
    root = tmp_path / "wt"
    tree = make_tree(root)
    await tree.start()
    demo = server.config.repos / "demo"
    (root / "docs" / "unicode.txt").write_text("changed and staged\n")
    await asyncio.to_thread(git, root, "add", "docs/unicode.txt")
    await tree.wait_idle()
    held = git(root, "rev-parse", "HEAD").strip()
    assert git(root, "diff", "--cached", "--name-only").split() == ["docs/unicode.txt"]
    async with Client(server.url, user="bob") as bob:
        doc = await bob.open("demo/main:README.md")
        doc.insert(0, "bob\n")
        await bob.flush()
        await bob.commit("demo", "main")
        await until(lambda: (root / "README.md").read_text().startswith("bob\n"))
        await tree.wait_idle()
        assert git(root, "rev-parse", "HEAD").strip() == held
        assert git(root, "diff", "--cached", "--name-only").split() == ["docs/unicode.txt"]
        await asyncio.to_thread(git, root, "reset", "-q")  # done with it
        (root / ".git" / "index.lock").write_text("")  # someone's git, under way
        doc.insert(0, "bob again\n")
        await bob.flush()
        await bob.commit("demo", "main")
        await until(lambda: (root / "README.md").read_text().startswith("bob again\n"))
        await tree.wait_idle()
        assert git(root, "rev-parse", "HEAD").strip() != git(demo, "rev-parse", "main").strip()
        os.remove(root / ".git" / "index.lock")
        doc.insert(0, "and again\n")
        await bob.flush()
        await bob.commit("demo", "main")
        main = git(demo, "rev-parse", "main").strip()
        await until(lambda: git(root, "rev-parse", "HEAD").strip() == main)
        await tree.wait_idle()
        assert git(root, "status", "--porcelain") == ""


async def test_links_the_branch_made_while_the_syncer_was_away_come_to_disk(
    server: CollabServer, make_tree: MakeTree, tmp_path: Path
) -> None:
    root = tmp_path / "wt"
    tree = make_tree(root)
    await tree.start()
    await tree.wait_idle()
    await tree.stop()
    work = await asyncio.to_thread(other_clone, server, tmp_path)
    (work / "latest").symlink_to("docs/unicode.txt")
    await asyncio.to_thread(git, work, "add", "-A")
    await asyncio.to_thread(git, work, "commit", "-qm", "a link")
    await asyncio.to_thread(git, work, "push", "-q", "origin", "main")
    again = make_tree(root)
    await again.start()
    await again.wait_idle()
    assert os.readlink(root / "latest") == "docs/unicode.txt"
    assert "latest" in tree_files(server)


@pytest.mark.parametrize("files", [{}, {"mine.txt": "my notes\n"}], ids=["empty", "a-file"])
async def test_a_directory_just_made_a_repository_gets_the_branch_and_deletes_nothing(
    server: CollabServer, make_tree: MakeTree, tmp_path: Path, files: dict[str, str]
) -> None:
    """``git init`` in a directory, maybe a file in it, nothing committed: none of the
    branch's files is missing from it, they were never there. They come to disk, the file
    goes to the branch, and nothing is deleted."""
    root = tmp_path / "fresh"
    root.mkdir()
    git(root, "init", "-q")
    for name, text in files.items():
        (root / name).write_text(text)
    before = tree_files(server)
    tree = make_tree(root)
    await tree.start()
    await tree.wait_idle()
    await until(lambda: tree_files(server) == before | set(files))
    for path in before:
        assert (root / path).read_bytes() == blob(server, f"main:{path}")
    for name, text in files.items():
        assert (root / name).read_text() == text
        assert blob(server, f"main:{name}") == text.encode()
    # git there sees the branch, as in a clone: a commit made there is one of its history
    assert git(root, "symbolic-ref", "HEAD").strip() == "refs/heads/main"
    head = git(server.config.repos / "demo", "rev-parse", "main").strip()
    await until(lambda: git(root, "rev-parse", "HEAD").strip() == head)
    await until(lambda: git(root, "status", "--porcelain") == "")
    await tree.stop()
    (root / "later.txt").write_text("committed here\n")
    git(root, "add", "later.txt")
    git(root, "-c", "user.name=me", "-c", "user.email=me@example.com", "commit", "-qm", "mine")
    again = make_tree(root)
    await again.start()  # the history is the branch's: synced on
    await until(lambda: "later.txt" in tree_files(server))


async def test_a_file_the_server_holds_too_large_to_be_live_goes_through_git(
    repos: Path, tmp_path: Path
) -> None:
    """A server whose documents may hold less than the syncer's ``max_file`` refuses the
    live edit of a larger save (4019): the file goes through git instead (it was recorded
    as synced, and the live text then overwrote it on disk), both a new file and one that
    grows past the cap."""
    config = make_config(repos, tmp_path / "data", max_document=5000)
    big = "".join(
        f"line {i:03d} of a file larger than the server's documents\n" for i in range(120)
    )
    async with CollabServer(config) as server:
        root = tmp_path / "wt"
        events: list[dict[str, object]] = []
        tree = WorkingTree(root, server.url, "demo", "main", user="alice", report=events.append)
        await tree.start()
        try:
            (root / "notes.txt").write_text("small\n")
            await until(lambda: held(server, "notes.txt") == b"small\n", timeout=20)
            await tree.wait_idle()
            (root / "notes.txt").write_text(big)
            (root / "new.txt").write_text(big)
            for path in ("notes.txt", "new.txt"):
                await until(lambda p=path: held(server, p) == big.encode(), timeout=20)
            await tree.wait_idle()
            async with Client(server.url, user="bob") as bob:
                doc = await bob.open("demo/main:README.md")
                doc.insert(0, "bob\n")
                await bob.flush()
                await bob.commit("demo", "main")
            await until(lambda: (root / "README.md").read_text().startswith("bob\n"), timeout=20)
            await tree.wait_idle()
            for path in ("notes.txt", "new.txt"):
                assert (root / path).read_text() == big, path
        finally:
            await tree.stop()


def held(server: CollabServer, path: str) -> bytes | None:
    """What ``main`` holds at ``path`` (``None``: nothing)."""
    done = subprocess.run(
        ["git", "-C", str(server.config.repos / "demo"), "show", f"main:{path}"],
        capture_output=True,
    )
    return done.stdout if done.returncode == 0 else None


async def test_a_deletion_on_disk_drops_no_edit_made_live_as_it_is_pushed(
    server: CollabServer, make_tree: MakeTree, tmp_path: Path
) -> None:
    """A file deleted on disk, unchanged live when the syncer decides so; bob types in it
    just before the deletion is pushed (his edit is committed before the push is taken):
    the deletion is not pushed over his edit; the live text is kept, and a conflict says
    so."""
    root = tmp_path / "wt"
    tree = make_tree(root)
    await tree.start()
    await tree.wait_idle()
    async with Client(server.url, user="bob") as bob:
        doc = await bob.open("demo/main:README.md")
        checkout = tree._checkout
        assert checkout is not None
        push = checkout.commit_and_push

        async def typed_first(*args: Any, **kwargs: Any) -> str:
            if not str(doc.text).startswith("bob"):
                doc.insert(0, "bob typed this\n")
                await bob.flush()
            return await push(*args, **kwargs)

        checkout.commit_and_push = typed_first  # type: ignore[method-assign]
        (root / "README.md").unlink()
        await until(lambda: tree.events.of("conflict"), timeout=20)  # type: ignore[attr-defined]
        await tree.wait_idle()
        assert held(server, "README.md") == str(doc.text).encode()
        assert str(doc.text).startswith("bob typed this\n")
        assert (root / "README.md").read_text() == str(doc.text)
