"""Files keep their bytes through the sync: CRLF, bare CR (classic Mac OS) and mixed line
endings, a last line without one and a byte order mark, both ways, in git too, and a round
trip writes nothing more."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from conftest import MakeTree, blob, until
from gitcli import git

from collab import Client, CollabServer
from collab.disk import WorkingTree

TEXTS = {
    "crlf": "one\r\ntwo\r\nthree\r\nfour\r\nfive\r\nsix\r\nseven\r\n",
    "cr": "one\rtwo\rthree\rfour\rfive\rsix\rseven\r",
    "mixed": "one\r\ntwo\nthree\rfour\r\nfive\nsix\r\nseven\n",
    "no-final-newline": "one\ntwo\nthree\nfour\nfive\nsix\nseven",
    "bom-crlf": "\ufeffone\r\ntwo\r\nthree\r\nfour\r\nfive\r\nsix\r\nseven",
}


async def quiet(tree: WorkingTree) -> None:
    """Wait until the tree is idle, then check that it stays so: nothing is written or sent
    back and forth."""
    await tree.wait_idle()
    done = (tree.counters.writes, tree.counters.edits)
    await asyncio.sleep(0.5)
    assert (tree.counters.writes, tree.counters.edits) == done


def edit_line(text: str, word: str, suffix: str) -> str:
    """``text`` with ``suffix`` after the line ``word`` (its line ending kept)."""
    index = text.index(word) + len(word)
    return text[:index] + suffix + text[index:]


@pytest.mark.parametrize("name", list(TEXTS))
async def test_line_endings_survive_edits_on_both_sides(
    server: CollabServer, make_tree: MakeTree, tmp_path: Path, name: str
) -> None:
    """A disk edit reaches the document, a live edit the file, and edits of both sides made
    while the syncer was stopped merge line by line; the file, the document and git hold the
    same bytes all along, no line ending lost, added or changed."""
    text = TEXTS[name]
    root = tmp_path / "wt"
    path = root / "notes.txt"
    async with Client(server.url, user="bob") as bob:
        doc = await bob.open("demo/main:notes.txt")
        doc.insert(0, text)
        await bob.flush()
        await bob.commit("demo", "main")
        tree = make_tree(root)
        await tree.start()
        assert path.read_bytes() == text.encode()

        on_disk = edit_line(text, "two", " disk")
        path.write_bytes(on_disk.encode())
        await doc.wait_for(lambda t: t == on_disk)
        doc.insert(str(doc.text).index("five") + 4, " live")
        live = edit_line(on_disk, "five", " live")
        await until(lambda: path.read_bytes() == live.encode())
        await quiet(tree)
        await bob.commit("demo", "main")
        assert blob(server, "main:notes.txt") == live.encode()

        await tree.stop()
        path.write_bytes(edit_line(live, "one", " DISK").encode())
        doc.insert(str(doc.text).index("seven") + 5, " LIVE")
        await bob.flush()
        merged = edit_line(edit_line(live, "one", " DISK"), "seven", " LIVE")
        again = make_tree(root)
        await again.start()
        await doc.wait_for(lambda t: t == merged)
        await until(lambda: path.read_bytes() == merged.encode())
        await quiet(again)
        assert not again.events.of("conflict")  # type: ignore[attr-defined]
        await bob.commit("demo", "main")
        assert blob(server, "main:notes.txt") == merged.encode()


@pytest.mark.parametrize("conversion", ["gitattributes", "autocrlf"])
async def test_a_checkout_holds_the_bytes_of_the_branch(
    server: CollabServer,
    make_tree: MakeTree,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    conversion: str,
) -> None:
    """The first checkout writes each file as the branch holds it, whatever line endings
    git would convert it to (``eol=crlf`` in ``.gitattributes``, ``core.autocrlf`` in the
    user's git configuration): the syncer takes the files for what the branch holds, so a
    converted file would be sent back as an edit of every line, and committed."""
    root = tmp_path / "wt"
    text = "one\ntwo\nthree\n"
    async with Client(server.url, user="bob") as bob:
        if conversion == "gitattributes":
            attributes = await bob.open("demo/main:.gitattributes")
            attributes.insert(0, "*.txt text eol=crlf\n")
        else:
            monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
            monkeypatch.setenv("GIT_CONFIG_KEY_0", "core.autocrlf")
            monkeypatch.setenv("GIT_CONFIG_VALUE_0", "true")
        doc = await bob.open("demo/main:notes.txt")
        doc.insert(0, text)
        await bob.flush()
        await bob.commit("demo", "main")
        head = blob(server, "main")
        tree = make_tree(root)
        await tree.start()
        await quiet(tree)
        assert (root / "notes.txt").read_bytes() == text.encode()
        assert str(doc.text) == text and tree.counters.edits == 0
        await bob.commit("demo", "main")
        assert blob(server, "main") == head  # nothing was committed

        (root / "notes.txt").write_bytes(b"one\r\ntwo\nthree\n")  # what the disk holds, git holds
        await doc.wait_for(lambda t: t == "one\r\ntwo\nthree\n")
        await quiet(tree)
        await bob.commit("demo", "main")
        assert blob(server, "main:notes.txt") == b"one\r\ntwo\nthree\n"


async def test_a_clone_git_converted_is_adopted_as_the_branch_holds_it(
    server: CollabServer, make_tree: MakeTree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Syncing into one's own clone, made with ``core.autocrlf=true`` (Git for Windows'
    default): its files, converted to CRLF, are written back as the branch holds them
    instead of going to the branch as edits of every line; an edit made in the clone before
    the first sync still goes."""
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", "core.autocrlf")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", "true")
    async with Client(server.url, user="bob") as bob:
        doc = await bob.open("demo/main:notes.txt")
        doc.insert(0, "one\ntwo\nthree\n")
        await bob.flush()
        await bob.commit("demo", "main")
        head = blob(server, "main")
        root = tmp_path / "clone"
        url = server.url.replace("ws://", "http://alice:dev@") + "/git/demo.git"
        await asyncio.to_thread(git, tmp_path, "clone", "-q", url, str(root))
        assert (root / "notes.txt").read_bytes() == b"one\r\ntwo\r\nthree\r\n"
        readme = (root / "README.md").read_bytes()
        (root / "README.md").write_bytes(readme + b"edited before the sync\r\n")
        tree = make_tree(root)
        await tree.start()
        await quiet(tree)
        assert (root / "notes.txt").read_bytes() == b"one\ntwo\nthree\n"
        assert str(doc.text) == "one\ntwo\nthree\n"
        await bob.commit("demo", "main")
        assert blob(server, "main:notes.txt") == b"one\ntwo\nthree\n"
        edited = readme + b"edited before the sync\r\n"  # git counts it changed: it is kept
        assert (root / "README.md").read_bytes() == edited == blob(server, "main:README.md")
        assert blob(server, "main~1") == head
