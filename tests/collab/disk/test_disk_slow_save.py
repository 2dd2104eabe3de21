"""A program that writes its save slowly, chunk after chunk (``cmd > file`` on a slow disk,
a formatter streaming its output), while someone types live in the same file."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest
from conftest import MakeTree
from test_disk_races import add, committed, numbered, seeded_tree, settled

from collab import CollabServer
from collab.disk import syncer, writers


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
    assert writers.allow_lease_checks()
    assert not writers.being_written(path)
    with open(path, "r+b"):
        assert writers.being_written(path)
    with open(path, "rb"):
        assert not writers.being_written(path)
    assert not writers.being_written(tmp_path / "missing.txt")
    with path.open("wb") as out:  # the shell's stdout: `cmd > file`
        shell = subprocess.Popen(["sh", "-c", "echo a; sleep 0.5"], stdout=out)
    try:
        assert writers.being_written(path)
    finally:
        shell.wait()
    assert not writers.being_written(path)
