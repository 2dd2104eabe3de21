"""Saves that race the syncer's writes: an editor whose buffer missed the live edits the
syncer has just written to the file saves it (each editor's save style). Nothing typed on
either side is lost or doubled: the save is merged against the text it was made from."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from conftest import MakeTree, save_by_rename, save_in_place, until
from gitcli import git

from collab import Client, CollabServer
from collab.client import Document
from collab.disk import WorkingTree, writers

Save = Callable[[Path, str], Awaitable[None]]


def numbered(count: int = 30) -> str:
    return "".join(f"line{n:02d}\n" for n in range(count))


def after_line(text: str, line: int) -> int:
    """The code point index just after the label of ``line``."""
    return text.index(f"line{line:02d}") + len(f"line{line:02d}")


def add(text: str, line: int, token: str) -> str:
    index = after_line(text, line)
    return text[:index] + token + text[index:]


async def settled(path: Path, doc: Document, timeout: float = 15.0) -> str:
    """Wait until the file and the document hold the same text for a moment; return it."""
    async with asyncio.timeout(timeout):
        while True:
            disk = path.read_bytes().decode()
            if str(doc.text) == disk:
                await asyncio.sleep(0.3)
                if path.read_bytes().decode() == disk == str(doc.text):
                    return disk
            await asyncio.sleep(0.02)


async def committed(server: CollabServer, tree: WorkingTree, bob: Client) -> str:
    """The file on the branch once the syncer is idle and bob has had the branch committed."""
    await tree.wait_idle()
    await bob.commit("demo", "main")
    return git(server.config.repos / "demo", "show", "main:src/app.py")


async def seeded(server: CollabServer, bob: Client, text: str | None = None) -> Document:
    """Bob's ``src/app.py``, holding ``text`` (numbered lines unless given)."""
    doc = await bob.open("demo/main:src/app.py")
    doc.delete(0, len(str(doc.text)))
    doc.insert(0, numbered() if text is None else text)
    await bob.flush()
    return doc


@contextlib.asynccontextmanager
async def seeded_tree(
    server: CollabServer, make_tree: MakeTree, root: Path
) -> AsyncIterator[tuple[Client, Document, WorkingTree, Path]]:
    """Bob, with ``src/app.py`` seeded with numbered lines, and a syncer of ``root`` started
    on it: (bob, his document, the syncer, the file)."""
    async with Client(server.url, user="bob") as bob:
        doc = await seeded(server, bob)
        tree = make_tree(root)
        await tree.start()
        yield bob, doc, tree, root / "src" / "app.py"


@pytest.mark.parametrize("save", [save_in_place, save_by_rename], ids=lambda f: f.__name__)
@pytest.mark.parametrize("line", [14, 3], ids=["elsewhere", "same-line"])
async def test_a_stale_save_after_several_live_writes_keeps_them_all(
    server: CollabServer, make_tree: MakeTree, tmp_path: Path, save: Save, line: int
) -> None:
    """Bob types twice, the syncer writes the file twice; then an editor that had the file
    open from before either write saves it, with an edit of another line or of the line bob
    typed in first. Neither of bob's edits is undone: the save merges against the text the
    editor had (an edit of the same line conflicts, both kept between markers)."""
    root = tmp_path / "wt"
    async with seeded_tree(server, make_tree, root) as (bob, doc, tree, path):
        buffer = path.read_text()  # the editor's buffer
        doc.insert(after_line(str(doc.text), 3), " LIVE1")
        await until(lambda: "LIVE1" in path.read_text())
        doc.insert(after_line(str(doc.text), 25), " LIVE2")
        await until(lambda: "LIVE2" in path.read_text())
        await save(path, add(buffer, line, " DISK"))
        final = await settled(path, doc)
        for token in ("LIVE1", "LIVE2", "DISK"):
            assert final.count(token) == 1, (token, final)
        assert ("<<<<<<<" in final) == (line == 3), final
        assert await committed(server, tree, bob) == final


@pytest.mark.parametrize("seed", [1, 2])
async def test_an_editor_that_seldom_reloads_races_live_typing(
    server: CollabServer, make_tree: MakeTree, tmp_path: Path, seed: int
) -> None:
    """An editor saves every few tens of milliseconds, in place or by a rename, reloading
    the file only now and then (its buffer misses the live edits written meanwhile) while
    bob types on two other lines: every token ends in the file, the document and git
    exactly once."""
    rng = random.Random(seed)
    root = tmp_path / "wt"
    async with seeded_tree(server, make_tree, root) as (bob, doc, tree, path):
        tokens: list[str] = []

        async def typist() -> None:
            for n in range(12):
                line = 4 if n % 2 else 26
                doc.insert(after_line(str(doc.text), line), f" bob{n}")
                tokens.append(f" bob{n}")
                await asyncio.sleep(rng.uniform(0.005, 0.05))

        async def editor() -> None:
            buffer = path.read_text()
            for n in range(8):
                if rng.random() < 0.3:
                    buffer = path.read_text()
                await asyncio.sleep(rng.uniform(0.01, 0.08))  # typing into a stale buffer
                buffer = add(buffer, 15, f" disk{n}")
                save = save_in_place if rng.random() < 0.5 else save_by_rename
                await save(path, buffer)
                tokens.append(f" disk{n}")

        await asyncio.gather(typist(), editor())
        final = await settled(path, doc)
        for token in tokens:
            assert final.count(token + " ") + final.count(token + "\n") == 1, (token, final)
        assert "<<<<<<<" not in final
        assert await committed(server, tree, bob) == final


@pytest.mark.parametrize("pause", [0.03, 0.2])
async def test_a_save_written_in_two_goes_keeps_its_end_when_a_live_edit_comes_between(
    server: CollabServer,
    make_tree: MakeTree,
    tmp_path: Path,
    pause: float,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A program truncates the file and writes half of its save, and the rest ``pause``
    seconds later (a slow disk, ``cmd > file``); bob types in between. Where the syncer
    cannot tell that the file is held open for writing (no leases: other systems, other
    filesystems), it takes the half for the file as it is and writes bob's edit over it, so
    the rest of the save goes into the file that write replaced: it is put back and merged.
    The file, the document and git end with the whole save and bob's edit."""
    monkeypatch.setattr(writers, "being_written", lambda path: False)
    root = tmp_path / "wt"
    async with seeded_tree(server, make_tree, root) as (bob, doc, tree, path):
        saved = add(numbered(), 5, " DISK").encode()
        with open(path, "r+b") as handle:
            handle.truncate(0)
            handle.write(saved[: len(saved) // 2])
            handle.flush()
            await doc.wait_for(lambda t: t.encode() == saved[: len(saved) // 2])
            doc.insert(after_line(str(doc.text), 2), " BOB")
            await until(lambda: "BOB" in path.read_text())  # written over the half
            await asyncio.sleep(pause)
            handle.write(saved[len(saved) // 2 :])
        final = await settled(path, doc)
        assert final == add(saved.decode(), 2, " BOB"), final
        assert await committed(server, tree, bob) == final


def _save_slowly_in_place(path: Path, saves: int, rng: random.Random) -> None:
    """The editor, in a thread of its own: ``saves`` saves a few milliseconds apart, each a
    new line ``[sN]`` between an ``--a`` and a ``--b`` line; half of them truncate the file
    and write it in one go, half in two goes with a pause between."""
    for n in range(saves):
        text = path.read_text()
        k = rng.randrange(6)
        at = text.index(f"--a{k}\n") + len(f"--a{k}\n")
        data = (text[:at] + f"[s{n}]\n" + text[at:]).encode()
        with open(path, "wb") as handle:
            if rng.random() < 0.5:
                handle.write(data)
            else:
                handle.write(data[: len(data) // 2])
                handle.flush()
                time.sleep(rng.uniform(0.01, 0.06))
                handle.write(data[len(data) // 2 :])
        time.sleep(0.016)


async def test_slow_saves_in_place_racing_live_typing_lose_and_double_nothing(
    server: CollabServer, make_tree: MakeTree, tmp_path: Path
) -> None:
    """An editor saves in place again and again, often in two goes with a pause between
    (``cmd > file`` on a slow disk), each save a new line, while bob types a tag every
    10 ms. The syncer reads the file only once the program writing it has closed it (or
    again, if it changed while it was read): a half save never goes live, so every line and
    every tag ends in the file, the document and git exactly once. Bob types only in the
    ``R`` lines and the editor adds lines only between ``--a`` and ``--b``: no merge may
    conflict."""
    root = tmp_path / "wt"
    layout = "".join(f"R{k}:\n--a{k}\n--b{k}\n" for k in range(6))
    rng = random.Random(7)
    async with Client(server.url, user="bob") as bob:
        doc = await seeded(server, bob, layout)
        tree = make_tree(root)
        await tree.start()
        path = root / "src" / "app.py"
        await until(lambda: path.exists() and path.read_text() == layout)
        typed = 0
        saves = 150
        editor = asyncio.create_task(
            asyncio.to_thread(_save_slowly_in_place, path, saves, random.Random(11))
        )
        while not editor.done():
            text = str(doc.text)
            k = rng.randrange(6)
            doc.insert(text.index(f"R{k}:") + len(f"R{k}:"), f"[r{typed}]")
            typed += 1
            await asyncio.sleep(0.01)
        await editor
        await bob.flush()
        final = await settled(path, doc)
        assert await committed(server, tree, bob) == final
    assert "<<<<<<<" not in final
    for tag in [f"[s{n}]\n" for n in range(saves)] + [f"[r{n}]" for n in range(typed)]:
        assert final.count(tag) == 1, (tag, final)


async def test_two_quick_saves_from_a_stale_buffer_keep_the_live_edit_they_lack(
    server: CollabServer, make_tree: MakeTree, tmp_path: Path
) -> None:
    """A save, then another 20 ms later (a format on save), both from a buffer that lacks
    the live edit the syncer has just written, of a file large enough that the first save's
    merge is under way when the second comes: the live edit stays, and each save's line is
    there once."""
    root = tmp_path / "wt"
    async with Client(server.url, user="bob") as bob:
        long = "".join(f"line{n:05d} of a long file\n" for n in range(20_000))
        doc = await seeded(server, bob, long)
        tree = make_tree(root)
        await tree.start()
        path = root / "src" / "app.py"
        await until(lambda: path.exists() and path.read_text() == str(doc.text), 30)
        buffer = path.read_text()
        doc.insert(0, "LIVE\n")
        await until(lambda: path.read_text().startswith("LIVE\n"), 30)

        def saves() -> None:  # (a program of its own: while the syncer works)
            for text in (buffer + "SAVE1\n", buffer + "SAVE1\nSAVE2\n"):
                temp = path.with_name(path.name + ".tmp")
                temp.write_text(text)
                os.replace(temp, path)
                time.sleep(0.02)

        await asyncio.to_thread(saves)
        final = await settled(path, doc, 60)
        for token in ("LIVE\n", "SAVE1\n", "SAVE2\n"):
            assert final.count(token) == 1, (token, final[:100], final[-100:])
        assert "<<<<<<<" not in final
        assert await committed(server, tree, bob) == final
