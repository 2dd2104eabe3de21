"""A program that writes its save slowly, chunk after chunk (``cmd > file`` on a slow disk,
a formatter streaming its output), while someone types live in the same file."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest
from conftest import MakeTree, until
from test_disk_races import add, committed, numbered, seeded_tree, settled

from collab import CollabServer
from collab.disk import leases, syncer


@pytest.mark.parametrize("line", [1, 20])
@pytest.mark.parametrize("chunks", [3, 6])
async def test_a_save_written_in_many_chunks_while_someone_types_ends_whole(
    server: CollabServer, make_tree: MakeTree, tmp_path: Path, chunks: int, line: int
) -> None:
    root = tmp_path / "wt"
    async with seeded_tree(server, make_tree, root) as (bob, doc, tree, path):
        saved = add(numbered(), 25, " DISK").encode()
        size = -(-len(saved) // chunks)
        typed: list[str] = []
        with open(path, "r+b") as handle:
            handle.truncate(0)
            for n in range(chunks):
                handle.write(saved[n * size : (n + 1) * size])
                handle.flush()
                await asyncio.sleep(0.12)
                token = f" BOB{n}"
                text = str(doc.text)
                label = f"line{line:02d}"
                assert label in text, "the live text lost the file's end while it was written"
                doc.insert(text.index(label) + len(label), token)
                typed.append(token)
        final = await settled(path, doc)
        assert "<<<<<<<" not in final, final
        assert " DISK" in final and final.count(" DISK") == 1, final
        for token in typed:
            assert final.count(token) == 1, (token, final)
        assert final.replace("".join(reversed(typed)), "") == saved.decode(), final
        assert await committed(server, tree, bob) == final


async def test_a_file_held_open_for_writing_for_good_is_synced_after_a_while(
    server: CollabServer, make_tree: MakeTree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A program that keeps the file open (a log) does not keep its changes out for good:
    they are taken once the limit has passed, waited for once, not again in each round."""
    monkeypatch.setattr(syncer, "WRITING_LIMIT", 1.0)
    root = tmp_path / "wt"
    async with seeded_tree(server, make_tree, root) as (_bob, doc, _tree, path):
        loop = asyncio.get_running_loop()
        with open(path, "ab") as handle:
            handle.write(b"appended\n")
            handle.flush()
            written = loop.time()
            await asyncio.sleep(0.5)
            assert "appended" not in str(doc.text)  # waited for
            await doc.wait_for(lambda text: text.endswith("line29\nappended\n"), timeout=5)
            assert loop.time() - written < 1.8  # the limit, once (not twice: 2 s)


def test_a_file_is_told_held_open_for_writing_by_this_or_another_process(
    tmp_path: Path,
) -> None:
    path = tmp_path / "file.txt"
    path.write_text("x\n")
    assert leases.allow_lease_checks()
    assert not leases.being_written(path)
    with open(path, "r+b"):
        assert leases.being_written(path)
    with open(path, "rb"):
        assert not leases.being_written(path)
    assert not leases.being_written(tmp_path / "missing.txt")
    with path.open("wb") as out:  # the shell's stdout: `cmd > file`
        shell = subprocess.Popen(["sh", "-c", "echo a; sleep 0.5"], stdout=out)
    try:
        assert leases.being_written(path)
    finally:
        shell.wait()
    assert not leases.being_written(path)


async def test_what_a_program_writes_long_after_a_write_replaced_its_file_is_put_back(
    server: CollabServer, make_tree: MakeTree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``(echo a; sleep 12; echo b) >> file`` while someone types: past the limit, the syncer
    takes the file as it is and writes the merge over it, and the program goes on writing
    into the file that replaced, long after. What it writes there is put back and merged
    once it lets the file go, not dropped with the replaced file a moment after the write."""
    monkeypatch.setattr(syncer, "WRITING_LIMIT", 0.5)
    root = tmp_path / "wt"
    async with seeded_tree(server, make_tree, root) as (bob, doc, tree, path):
        with open(path, "ab") as program:
            program.write(b"first\n")
            program.flush()
            doc.insert(0, "# bob\n")
            await until(lambda: os.stat(path).st_ino != os.fstat(program.fileno()).st_ino)
            assert path.read_text() == "# bob\n" + numbered() + "first\n"
            await asyncio.sleep(2)  # (the program is slow: the replaced file is held on)
            program.write(b"second\n")
            program.flush()
            await asyncio.sleep(0.3)
        expected = "# bob\n" + numbered() + "first\nsecond\n"
        await doc.wait_for(lambda text: text == expected, timeout=10)
        assert await settled(path, doc) == expected
        assert await committed(server, tree, bob) == expected
