"""A store file with damaged pages, a damaged log and a truncated log: the server starts and
serves every intact document; the damaged ones are answered with DAMAGED (4018); an offline
``collab store repair`` rebuilds the file from what can be read."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import aiohttp
from serverproc import ServerProcess

from collab import Client, ClientError
from gitsync import create_demo_repo
from protocol.errors import ErrorCode

FILES = {f"f{i:02}.txt": f"file {i}\n" + f"line of file {i}\n" * 180 for i in range(60)}
PAGE = 4096


def _store_cli(action: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "collab", "store", action, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )


async def _open_all(client: Client, names: list[str]) -> dict[str, str | int]:
    """Each file's text, or the error code its open was refused with."""
    found: dict[str, str | int] = {}
    for name in names:
        try:
            found[name] = str(await client.open(f"big/main:{name}"))
        except ClientError as exc:
            found[name] = exc.code
    return found


def _damage(store: Path) -> None:
    raw = bytearray(store.read_bytes())
    pages = len(raw) // PAGE
    for page in (pages // 3, pages // 2, 2 * pages // 3):  # page headers in the middle
        for offset in range(page * PAGE, page * PAGE + 12):
            raw[offset] ^= 0xA5
    store.write_bytes(bytes(raw))
    wal = Path(f"{store}-wal")
    log = bytearray(wal.read_bytes())
    for offset in range(len(log) // 2, len(log) // 2 + 64):  # a frame in the middle
        log[offset] ^= 0x5A
    wal.write_bytes(bytes(log[: len(log) - 1000]))  # and a torn end


async def test_a_damaged_store_file_is_served_around_and_repaired(tmp_path: Path) -> None:
    repos = tmp_path / "repos"
    create_demo_repo(repos / "big", FILES)
    names = sorted(FILES)
    server = ServerProcess(repos, tmp_path / "data", extra_args=("--completion-backend", "none"))
    store = server.data_dir / "store.sqlite3"
    await server.start()
    async with Client(server.url, user="ann") as ann:  # seeded, then checkpointed at stop
        assert await _open_all(ann, names[:40]) == {n: FILES[n] for n in names[:40]}
    await server.stop()
    await server.start()
    async with Client(server.url, user="ann") as ann:  # seeded into the log, then a crash
        assert await _open_all(ann, names[40:]) == {n: FILES[n] for n in names[40:]}
        await ann.flush()
    await server.kill()
    _damage(store)

    await server.start()  # it starts, whatever is damaged
    try:
        async with Client(server.url, user="bob") as bob:
            found = await _open_all(bob, names)
        damaged = sorted(n for n, text in found.items() if text == ErrorCode.DAMAGED)
        assert damaged, "the damage hit no document"
        assert all(found[n] == FILES[n] for n in names if n not in damaged)
        base = server.url.replace("ws://", "http://")
        async with aiohttp.ClientSession() as session, asyncio.timeout(20):
            while True:  # the check after the crash reads the whole file, beside the serving
                async with session.get(base + "/healthz") as resp:
                    health = await resp.json()
                if health["store"]:
                    break
                await asyncio.sleep(0.05)
        assert sorted(key.split(":", 1)[1] for key in health["damaged"]) == damaged
    finally:
        await server.stop()

    checked = _store_cli("check", server.data_dir)
    assert checked.returncode == 1 and "database file" in checked.stdout, checked
    repaired = _store_cli("repair", server.data_dir)
    assert repaired.returncode == 0, repaired.stderr
    assert list(server.data_dir.glob("store.sqlite3.damaged-*"))  # the old file is kept aside

    await server.start()
    try:
        async with Client(server.url, user="carl") as carl:
            assert await _open_all(carl, names) == FILES  # kept, or seeded from the branch
    finally:
        await server.stop()
    assert _store_cli("check", server.data_dir).returncode == 0


async def test_a_store_file_damaged_while_the_server_was_stopped_is_reported(
    tmp_path: Path,
) -> None:
    """A clean stop leaves nothing to recover, but a page can still be damaged before the
    next start (a bad disk, a copy gone wrong): every start checks the file, beside the
    serving, and ``/healthz`` reports what the check found."""
    repos = tmp_path / "repos"
    create_demo_repo(repos / "big", FILES)
    names = sorted(FILES)
    server = ServerProcess(repos, tmp_path / "data", extra_args=("--completion-backend", "none"))
    store = server.data_dir / "store.sqlite3"
    await server.start()
    async with Client(server.url, user="ann") as ann:
        await _open_all(ann, names)
    await server.stop()
    assert (server.data_dir / "clean-shutdown").exists() and store.exists()
    with closing(sqlite3.connect(store)) as conn:
        (page,) = conn.execute(
            "SELECT pageno FROM dbstat WHERE name = 'records' AND pagetype = 'leaf'"
            " ORDER BY pageno LIMIT 1 OFFSET 1"
        ).fetchone()
    raw = bytearray(store.read_bytes())
    raw[(page - 1) * PAGE : page * PAGE] = bytes(PAGE)
    store.write_bytes(bytes(raw))

    await server.start()
    try:
        base = server.url.replace("ws://", "http://")
        async with aiohttp.ClientSession() as session, asyncio.timeout(20):
            while True:
                async with session.get(base + "/healthz") as resp:
                    health = await resp.json()
                if health["store"]:
                    break
                await asyncio.sleep(0.05)
        assert "malformed" in health["store"][0], health
    finally:
        await server.stop()
    assert "the store file is damaged" in server.log.read_text()


async def test_repair_names_each_document_a_damaged_page_took_whole(tmp_path: Path) -> None:
    """A damaged page can hold every record of some documents: the repair cannot keep any of
    their history, but it names each (the ``names`` table still does) and marks it, so that
    its seeding again from the branch head is said, never silent."""
    repos = tmp_path / "repos"
    create_demo_repo(repos / "big", FILES)
    names = sorted(FILES)
    server = ServerProcess(repos, tmp_path / "data", extra_args=("--completion-backend", "none"))
    store = server.data_dir / "store.sqlite3"
    await server.start()
    async with Client(server.url, user="ann") as ann:
        for name in names:
            (await ann.open(f"big/main:{name}")).insert(0, f"<ann {name}>")
        await ann.flush()
    await server.stop()  # committed, each history compacted into a snapshot
    with closing(sqlite3.connect(store)) as conn:
        leaves = conn.execute(
            "SELECT pageno FROM dbstat WHERE name = 'records' AND pagetype = 'leaf' ORDER BY pageno"
        ).fetchall()
    (page,) = leaves[len(leaves) // 2]
    raw = bytearray(store.read_bytes())
    raw[(page - 1) * PAGE : page * PAGE] = bytes(PAGE)
    store.write_bytes(bytes(raw))

    repaired = _store_cli("repair", server.data_dir)
    assert repaired.returncode == 0, repaired.stderr
    with closing(sqlite3.connect(store)) as conn:
        kept = {row[0] for row in conn.execute("SELECT DISTINCT doc_id FROM records")}
        marked = {row[0] for row in conn.execute("SELECT doc_id FROM recovered")}
    gone = {f"big/main:{name}" for name in names} - kept
    assert gone, "the damaged page held no document whole"
    said = {
        line.split(": ", 1)[0]
        for line in repaired.stdout.splitlines()
        if "whole history was lost" in line
    }
    assert said == gone and gone <= marked, repaired.stdout

    await server.start()
    try:
        async with Client(server.url, user="bob") as bob:
            for doc_id in sorted(gone):  # seeded again from the branch head, which has it
                name = doc_id.split(":", 1)[1]
                assert str(await bob.open(doc_id)) == f"<ann {name}>{FILES[name]}"
    finally:
        await server.stop()
    log = server.log.read_text()
    assert all(f"{doc_id}: its stored history was lost" in log for doc_id in gone)
