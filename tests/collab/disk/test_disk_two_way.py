"""Two-way sync of a working tree with live documents: real files, the real watcher, the real
server, remote clients typing while an editor saves the same file in each editor's style."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
from conftest import SAVE_STYLES, MakeTree, blob, until
from gitcli import git
from test_disk_git import other_clone

from collab import Client, CollabServer

LINES = 30


def numbered(count: int = LINES) -> str:
    return "".join(f"line{n:02d}\n" for n in range(count))


def insert_at_line(doc_text: str, line: int, token: str) -> int:
    """The code point index just after the label of ``line``."""
    return doc_text.index(f"line{line:02d}") + len(f"line{line:02d}")


async def settled(tree_file: Path, *docs: object, timeout: float = 15.0) -> str:
    """Wait until the file and every document hold the same text; return it."""
    async with asyncio.timeout(timeout):
        while True:
            disk = tree_file.read_text()
            if all(str(doc) == disk for doc in docs):
                await asyncio.sleep(0.2)
                if tree_file.read_text() == disk and all(str(doc) == disk for doc in docs):
                    return disk
            await asyncio.sleep(0.02)


@pytest.mark.parametrize("save", SAVE_STYLES, ids=lambda f: f.__name__)
async def test_disk_saves_and_two_typists_converge(
    server: CollabServer, make_tree: MakeTree, tmp_path: Path, save: object
) -> None:
    """An editor saves one file on disk while two remote clients type into it: the file,
    both clients and the branch in git end with every edit exactly once, and the syncer
    writes the file only for remote changes (no echo of its own writes)."""
    assert callable(save)
    root = tmp_path / "wt"
    async with Client(server.url, user="bob") as bob, Client(server.url, user="carol") as carol:
        seed = await bob.open("demo/main:src/app.py")
        seed.delete(0, len(str(seed.text)))
        seed.insert(0, numbered())
        await bob.flush()
        tree = make_tree(root)
        await tree.start()
        path = root / "src" / "app.py"
        assert path.read_text() == numbered()
        b_doc = seed
        c_doc = await carol.open("demo/main:src/app.py")
        rng = random.Random(7)
        tokens: list[str] = []

        async def typist(doc: object, name: str, line: int) -> None:
            for n in range(8):
                token = f" {name}{n}"
                text = str(doc)
                doc.insert(insert_at_line(text, line, token), token)  # type: ignore[attr-defined]
                tokens.append(token)
                await asyncio.sleep(rng.uniform(0.005, 0.04))

        async def editor() -> None:
            for n in range(8):
                await asyncio.sleep(rng.uniform(0.01, 0.06))
                token = f" disk{n}"
                text = path.read_text()  # an editor that reloads what changed on disk
                index = insert_at_line(text, 15, token)
                await save(path, text[:index] + token + text[index:])
                tokens.append(token)

        await asyncio.gather(typist(b_doc, "bob", 4), typist(c_doc, "carol", 26), editor())
        final = await settled(path, b_doc, c_doc)
        for token in tokens:
            assert final.count(token + " ") + final.count(token + "\n") == 1, (token, final)
        assert "<<<<<<<" not in final
        await tree.wait_idle()
        writes = tree.counters.writes
        await asyncio.sleep(0.5)
        assert tree.counters.writes == writes  # nothing echoes back and forth
        assert path.read_text() == final
        await bob.commit("demo", "main")
        assert git(server.config.repos / "demo", "show", "main:src/app.py") == final


async def test_own_writes_are_not_sent_back(
    server: CollabServer, make_tree: MakeTree, tmp_path: Path
) -> None:
    """Each remote keystroke is written to the file once; the syncer's own writes, seen by
    the watcher, make no live edit (the live document receives only the typist's updates)."""
    root = tmp_path / "wt"
    tree = make_tree(root, debounce=0.0)
    await tree.start()
    path = root / "README.md"
    async with Client(server.url, user="bob") as bob:
        doc = await bob.open("demo/main:README.md")
        updates: list[bytes] = []
        doc.doc.observe(lambda event: updates.append(bytes(event.update)))
        for n in range(5):
            doc.insert(len(str(doc.text)), f"typed {n}\n")
            await asyncio.sleep(0.3)
            assert path.read_text() == str(doc.text)
        await tree.wait_idle()
        await asyncio.sleep(0.3)
        assert len(updates) == 5  # bob's own five; nothing came back from the syncer
        assert tree.counters.writes == 5
        assert tree.counters.edits == 0


async def test_new_files_both_ways_and_unicode(
    server: CollabServer, make_tree: MakeTree, tmp_path: Path
) -> None:
    """A file created on disk becomes a live document; one created live (someone opens a new
    path and types) appears on disk; text outside ASCII survives both ways."""
    root = tmp_path / "wt"
    tree = make_tree(root)
    await tree.start()
    async with Client(server.url, user="bob") as bob:
        (root / "notes").mkdir()
        (root / "notes" / "new.md").write_text("héllo 世界 🎉\n")
        doc = await bob.open("demo/main:notes/new.md")
        await doc.wait_for(lambda text: text == "héllo 世界 🎉\n")
        live = await bob.open("demo/main:made/live.txt")
        live.insert(0, "from bob: ünïcode 🎉\n")
        target = root / "made" / "live.txt"
        async with asyncio.timeout(10):
            while not target.exists() or target.read_text() != "from bob: ünïcode 🎉\n":
                await asyncio.sleep(0.02)
        unicode = root / "docs" / "unicode.txt"
        text = unicode.read_text()
        unicode.write_text(text.replace("世界", "世界!"))
        udoc = await bob.open("demo/main:docs/unicode.txt")
        await udoc.wait_for(lambda t: "世界!" in t)
        udoc.insert(len(str(udoc.text)), "🎉 again\n")
        async with asyncio.timeout(10):
            while "again" not in unicode.read_text():
                await asyncio.sleep(0.02)
        assert unicode.read_text() == str(udoc.text)


async def test_ignored_files_stay_local(
    server: CollabServer, make_tree: MakeTree, tmp_path: Path
) -> None:
    """What .gitignore ignores, editors' scratch files and .git/ never become documents."""
    root = tmp_path / "wt"
    tree = make_tree(root)
    await tree.start()
    (root / ".gitignore").write_text("build/\n*.log\n")
    await tree.wait_idle()
    (root / "build").mkdir()
    (root / "build" / "out.txt").write_text("built\n")
    (root / "debug.log").write_text("log\n")
    (root / "x.py.swp").write_text("swap\n")
    (root / "kept.txt").write_text("kept\n")
    async with Client(server.url, user="bob") as bob:
        kept = await bob.open("demo/main:kept.txt")
        await kept.wait_for(lambda t: t == "kept\n")
        await tree.wait_idle()
        await bob.commit("demo", "main")
    files = git(server.config.repos / "demo", "ls-tree", "-r", "--name-only", "main").split()
    assert "kept.txt" in files and ".gitignore" in files
    assert not {"build/out.txt", "debug.log", "x.py.swp"} & set(files)


async def test_files_a_gitignore_change_stops_ignoring_are_synced_at_once(
    server: CollabServer, make_tree: MakeTree, tmp_path: Path
) -> None:
    """A line taken out of ``.gitignore``: the files it ignored are synced then, not once
    each is next modified."""
    root = tmp_path / "wt"
    tree = make_tree(root)
    await tree.start()
    (root / ".gitignore").write_text("*.log\n")
    await tree.wait_idle()
    (root / "debug.log").write_text("log\n")
    await asyncio.sleep(0.5)
    await tree.wait_idle()
    (root / ".gitignore").write_text("")
    async with Client(server.url, user="bob") as bob:
        log = await bob.open("demo/main:debug.log")
        await log.wait_for(lambda t: t == "log\n")


async def test_files_the_branch_has_are_synced_where_a_gitignore_matches_them(
    server: CollabServer, make_tree: MakeTree, tmp_path: Path
) -> None:
    """Files the branch has that ``.gitignore`` matches (added with ``git add -f``, or
    ignored once they were synced) are synced as git tracks them: both ways; ignoring applies
    to the files the branch does not have."""
    work = await asyncio.to_thread(other_clone, server, tmp_path)
    (work / ".gitignore").write_text("vendor/\n*.lock\n")
    (work / "vendor").mkdir()
    (work / "vendor" / "lib.py").write_text("LIB = 1\n")
    (work / "poetry.lock").write_text("lock v1\n")
    await asyncio.to_thread(git, work, "add", "-f", ".gitignore", "vendor/lib.py", "poetry.lock")
    await asyncio.to_thread(git, work, "commit", "-qm", "vendored")
    await asyncio.to_thread(git, work, "push", "-q", "origin", "main")
    root = tmp_path / "wt"
    tree = make_tree(root)
    await tree.start()
    assert (root / "vendor" / "lib.py").read_text() == "LIB = 1\n"
    async with Client(server.url, user="bob") as bob:
        lib = await bob.open("demo/main:vendor/lib.py")
        lib.insert(0, "# bob, live\n")
        await until(lambda: (root / "vendor" / "lib.py").read_text() == "# bob, live\nLIB = 1\n")
        (root / "poetry.lock").write_text("lock v2, on disk\n")
        lock = await bob.open("demo/main:poetry.lock")
        await lock.wait_for(lambda text: text == "lock v2, on disk\n")
        # README, synced, ignored from now on: still synced (the branch has it)
        (root / ".gitignore").write_text("vendor/\n*.lock\nREADME.md\n")
        await tree.wait_idle()
        (root / "README.md").write_text("# Ignored now, synced still\n")
        readme = await bob.open("demo/main:README.md")
        await readme.wait_for(lambda text: text == "# Ignored now, synced still\n")
        # the others still are not: new in an ignored folder, or matching a pattern
        (root / "vendor" / "new.py").write_text("NEW = 1\n")
        (root / "other.lock").write_text("other\n")
        await asyncio.sleep(0.5)
        await tree.wait_idle()
        await bob.commit("demo", "main")
    assert blob(server, "main:vendor/lib.py") == b"# bob, live\nLIB = 1\n"
    assert blob(server, "main:poetry.lock") == b"lock v2, on disk\n"
    files = git(server.config.repos / "demo", "ls-tree", "-r", "--name-only", "main").split()
    assert "vendor/new.py" not in files and "other.lock" not in files
    await until(lambda: git(root, "status", "--porcelain") == "")  # (.gitignore: committed)


async def test_the_default_branch_is_the_users_own(
    server: CollabServer, make_tree: MakeTree, tmp_path: Path
) -> None:
    """Without ``--branch`` the tree is the user's own branch (``branch.join``), made from
    the repository's default; edits there leave main alone."""
    root = tmp_path / "own"
    tree = make_tree(root, branch=None)
    await tree.start()
    assert tree.branch != "main"
    assert git(root, "rev-parse", "--abbrev-ref", "HEAD").strip() == tree.branch
    (root / "README.md").write_text("# Demo\n\nalice's own\n")
    async with Client(server.url, user="bob") as bob:
        doc = await bob.open(f"demo/{tree.branch}:README.md")
        await doc.wait_for(lambda t: "alice's own" in t)
        main = await bob.open("demo/main:README.md")
        assert "alice's own" not in str(main.text)


@pytest.mark.parametrize("pause", [0.12, 0.3])
async def test_a_slow_truncate_then_write_save_keeps_a_live_edit_made_during_it(
    server: CollabServer, make_tree: MakeTree, tmp_path: Path, pause: float
) -> None:
    """An editor truncates the file, and writes it ``pause`` seconds later (a big file, a
    slow disk); bob types live in between. The empty file is not taken for the user's
    emptying it: the save and bob's edit both end in the file, live and in git."""
    root = tmp_path / "wt"
    async with Client(server.url, user="bob") as bob:
        doc = await bob.open("demo/main:src/app.py")
        doc.delete(0, len(str(doc.text)))
        doc.insert(0, numbered())
        await bob.flush()
        tree = make_tree(root)
        await tree.start()
        path = root / "src" / "app.py"
        saved = numbered().replace("line05", "line05 DISK")
        with open(path, "r+b") as handle:
            handle.truncate(0)
            handle.flush()
            await asyncio.sleep(pause / 2)
            text = str(doc.text)
            doc.insert(insert_at_line(text, 20, " BOB"), " BOB")
            await asyncio.sleep(pause / 2)
            handle.write(saved.encode())
        final = await settled(path, doc)
        assert final == saved.replace("line20", "line20 BOB"), final
        await tree.wait_idle()
        await bob.commit("demo", "main")
        assert git(server.config.repos / "demo", "show", "main:src/app.py") == final
