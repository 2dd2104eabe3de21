"""``collab.store.repair``: what a repair keeps, sets aside and marks, on crafted histories."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from pycrdt import Doc, Text

from collab.store.repair import check, repair
from collab.store.sqlite_store import SQLiteStore

KEY = "demo/main:a.txt"


def _typist(client_id: int, base: bytes | None = None) -> tuple[Doc[Any], Text]:
    doc: Doc[Any] = Doc(client_id=client_id)
    if base is not None:
        doc.apply_update(base)
    return doc, doc.get("source", type=Text)


def _edit(doc: Doc[Any], change: Any) -> bytes:
    before = doc.get_state()
    change()
    return doc.get_update(before)


async def _store(path: Path, updates: list[bytes]) -> list[int]:
    async with SQLiteStore(path) as store:
        return [await store.append(KEY, update) for update in updates]


async def _text(path: Path) -> tuple[str, bool]:
    async with SQLiteStore(path) as store:
        stored = await store.load(KEY)
    assert stored is not None and stored.corrupt is None
    doc: Doc[Any] = Doc()
    stored.apply_to(doc)
    return str(doc.get("source", type=Text)), stored.recovered


def _damage(path: Path, seq: int, how: str = "data") -> None:
    with closing(sqlite3.connect(path)) as conn:
        if how == "data":
            (data,) = conn.execute(
                "SELECT data FROM records WHERE doc_id = ? AND seq = ?", (KEY, seq)
            ).fetchone()
            conn.execute(
                "UPDATE records SET data = ? WHERE doc_id = ? AND seq = ?",
                (bytes([data[0] ^ 1]) + data[1:], KEY, seq),
            )
        else:
            conn.execute("UPDATE records SET data = NULL WHERE doc_id = ? AND seq = ?", (KEY, seq))
        conn.commit()


def _aside(path: Path) -> dict[int, str]:
    with closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT seq, reason FROM quarantine WHERE doc_id = ?", (KEY,))
        return dict(rows.fetchall())


@pytest.mark.parametrize("how", ["data", "null"])
async def test_independent_edits_after_the_damage_are_kept(tmp_path: Path, how: str) -> None:
    path = tmp_path / "store.sqlite3"
    seed_doc, seed_text = _typist(1)
    seed = _edit(seed_doc, lambda: seed_text.insert(0, "base\n"))
    ann, ann_text = _typist(2, seed)
    bob, bob_text = _typist(3, seed)
    updates = [seed]
    for i in range(6):  # ann appends, key by key; each builds on her last
        updates.append(_edit(ann, lambda i=i: ann_text.insert(len(ann_text), f"a{i}")))
    for i in range(3):  # bob types at the start: his edits need only the seed and his own
        updates.append(_edit(bob, lambda i=i: bob_text.insert(0, f"b{i}")))
    seqs = await _store(path, updates)
    _damage(path, seqs[3], how)  # ann's third keystroke

    report = check(path)
    assert not report.sound and [d.doc_id for d in report.docs] == [KEY]
    assert list(report.docs[0].damaged) == [seqs[3]]

    repaired = repair(path)
    (doc,) = repaired.docs
    assert set(doc.set_aside) == set(seqs[3:7])  # the damaged one and ann's keystrokes after it
    assert "builds on the damaged record" in doc.set_aside[seqs[4]]
    assert doc.kept == len(seqs) - 4
    text, recovered = await _text(path)
    assert text == "b2b1b0base\na0a1" == doc.text
    assert recovered
    assert set(_aside(path)) == set(seqs[3:7])
    assert check(path).sound  # nothing damaged is left; the mark stays until accepted
    assert check(path).docs[0].recovered
    assert not repair(path, accept=[KEY]).docs[0].recovered
    assert check(path).docs == []


async def test_a_repeated_update_after_the_damage_keeps_one_copy(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    seed_doc, seed_text = _typist(1)
    seed = _edit(seed_doc, lambda: seed_text.insert(0, "base\n"))
    ann, ann_text = _typist(2, seed)
    first = _edit(ann, lambda: ann_text.insert(0, "x"))
    bob, bob_text = _typist(3, seed)
    mine = _edit(bob, lambda: bob_text.insert(5, "!"))
    seqs = await _store(path, [seed, first, mine, mine])  # stored twice (a resend)
    _damage(path, seqs[1])
    (doc,) = repair(path).docs
    assert set(doc.set_aside) == {seqs[1], seqs[3]} or set(doc.set_aside) == {seqs[1], seqs[2]}
    assert (await _text(path))[0] == "base\n!"


async def test_reseed_drops_the_history_and_keeps_the_sequence(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    seed_doc, seed_text = _typist(1)
    seqs = await _store(path, [_edit(seed_doc, lambda: seed_text.insert(0, "base\n"))])
    (doc,) = repair(path, reseed=[KEY]).docs
    assert set(doc.set_aside) == set(seqs) and doc.recovered
    async with SQLiteStore(path) as store:
        stored = await store.load(KEY)
        assert stored is not None and stored.empty and stored.recovered
        assert await store.append(KEY, b"\x00\x00") == seqs[-1] + 1  # seqs are never reused


def test_a_garbled_file_is_reported_then_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE t (x)")
        conn.executemany("INSERT INTO t VALUES (?)", [(b"x" * 3000,) for _ in range(50)])
        conn.commit()
    raw = bytearray(path.read_bytes())
    for offset in range(4096 + 100, 4096 + 600):  # garble the second page
        raw[offset] ^= 0x5A
    path.write_bytes(bytes(raw))
    assert check(path).integrity
    repair(path)
    assert check(path).integrity == []  # a sound file of the store's own tables
    assert list(tmp_path.glob("store.sqlite3.damaged-*"))


async def test_a_damaged_page_costs_only_the_records_on_it(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    docs = {f"demo/main:f{i:02}.txt": bytes([i]) * 3000 for i in range(30)}
    async with SQLiteStore(path) as store:
        for key, data in docs.items():
            await store.append(key, data, author="ann")  # one leaf page each, about
    with closing(sqlite3.connect(path)) as conn:
        leaves = [
            page
            for (page,) in conn.execute(
                "SELECT pageno FROM dbstat WHERE name = 'records' AND pagetype = 'leaf'"
                " ORDER BY pageno"
            )
        ]
    assert len(leaves) >= 3
    raw = bytearray(path.read_bytes())
    raw[(leaves[1] - 1) * 4096] = 0x7F  # not a page type: SQLite reports it malformed
    path.write_bytes(bytes(raw))

    report = check(path)
    assert report.integrity and not report.sound
    unreadable = []
    async with SQLiteStore(path) as store:
        for key in docs:
            try:
                await store.load(key)
            except sqlite3.DatabaseError:
                unreadable.append(key)
    assert 0 < len(unreadable) < len(docs) // 2

    lost = {doc.doc_id for doc in repair(path).docs if doc.lost}
    assert lost and lost <= set(unreadable)
    assert check(path).integrity == []
    async with SQLiteStore(path) as store:
        for key, data in docs.items():
            stored = await store.load(key)
            assert stored is not None and stored.recovered  # marked, lost or kept
            if key in lost:  # named by the repair, and seeded again (out loud) when opened
                assert stored.empty
            else:
                assert stored.updates == [(1, data)]
        assert await store.take_authors("demo/main") == ["ann"]  # kept for the next commit
    assert list(tmp_path.glob("store.sqlite3.damaged-*"))


async def test_check_changes_nothing_of_a_store_left_by_a_crash(tmp_path: Path) -> None:
    """After a crash the store's file and its write-ahead log are the evidence: a check
    reads them as they are (the log neither folded into the file nor removed)."""
    live = tmp_path / "live"
    live.mkdir()
    async with SQLiteStore(live / "store.sqlite3") as store:
        doc, text = _typist(1)
        await store.append(KEY, _edit(doc, lambda: text.insert(0, "kept in the file\n")))
    holder = sqlite3.connect(live / "store.sqlite3")  # keeps the log from being folded in
    try:
        holder.execute("PRAGMA wal_autocheckpoint = 0")
        holder.execute("INSERT INTO docs VALUES ('demo/main:b.txt', 1) ON CONFLICT DO NOTHING")
        holder.commit()
        crashed = tmp_path / "crashed"
        crashed.mkdir()
        for name in ("store.sqlite3", "store.sqlite3-wal"):
            (crashed / name).write_bytes((live / name).read_bytes())
    finally:
        holder.close()
    before = {p.name: p.read_bytes() for p in crashed.iterdir() if not p.name.endswith("-shm")}
    assert before["store.sqlite3-wal"]
    report = check(crashed / "store.sqlite3")
    assert report.sound
    after = {p.name: p.read_bytes() for p in crashed.iterdir() if not p.name.endswith("-shm")}
    assert after == before


def _store_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "collab", *args], capture_output=True, text=True, timeout=60
    )


async def test_a_damaged_header_string_is_put_back_once_a_copy_reads(tmp_path: Path) -> None:
    """A file whose first 16 bytes (SQLite's header string) are damaged is not a database
    to SQLite, though every page past them is whole: ``check`` says repair can mend it, and
    ``repair`` puts the string back, having read a copy so mended first."""
    data = tmp_path / "data"
    path = data / "store.sqlite3"
    seed_doc, seed_text = _typist(1)
    await _store(path, [_edit(seed_doc, lambda: seed_text.insert(0, "kept\n"))])
    raw = bytearray(path.read_bytes())
    raw[:16] = bytes(byte ^ 0xA5 for byte in raw[:16])
    path.write_bytes(bytes(raw))

    served = _store_cli("serve", "--data-dir", str(data), "--port", "0")
    assert served.returncode == 2 and len(served.stderr.splitlines()) == 1, served.stderr
    assert "header string is damaged" in served.stderr and "collab store check" in served.stderr
    checked = _store_cli("store", "check", "--data-dir", str(data))
    assert checked.returncode == 1, checked.stderr
    assert "header string is damaged: collab store repair restores it" in checked.stdout
    assert path.read_bytes() == bytes(raw)  # a check changes nothing
    assert sorted(p.name for p in data.iterdir()) == ["lock", "repos", "store.sqlite3"]

    repaired = _store_cli("store", "repair", "--data-dir", str(data))
    assert repaired.returncode == 0, repaired.stderr
    assert "header string is damaged: restored" in repaired.stdout
    assert path.read_bytes()[16:] == bytes(raw[16:])
    assert check(path).sound
    assert (await _text(path))[0] == "kept\n"


def test_a_file_that_no_header_makes_a_database_is_still_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "store.sqlite3").write_bytes(os.urandom(64 * 1024))
    for action in ("check", "repair"):
        done = _store_cli("store", action, "--data-dir", str(data))
        assert done.returncode == 2 and "file is not a database" in done.stderr, done.stderr
        assert "no repair reads it" in done.stderr
    assert sorted(p.name for p in data.iterdir()) == ["lock", "store.sqlite3"]


async def test_repair_refuses_a_document_it_does_not_know_and_changes_nothing(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    path = data / "store.sqlite3"
    seed_doc, seed_text = _typist(1)
    await _store(path, [_edit(seed_doc, lambda: seed_text.insert(0, "base\n"))])
    before = path.read_bytes()
    for option, doc_id, why in (
        ("--reseed", "demo/main:a.tx", "knows no such document"),  # a typo
        ("--reseed", "nonsense", "not a document id"),
        ("--accept", "whatever", "not a document id"),
        ("--accept", "demo/other:a.txt", "knows no such document"),
        ("--reseed", "demo/main:./a.txt", f"give it as the store names it: {KEY}"),
    ):
        done = _store_cli(
            "store", "repair", "--data-dir", str(data), "--reseed", KEY, option, doc_id
        )
        assert done.returncode == 2, done
        assert done.stdout == "" and len(done.stderr.splitlines()) == 1, done.stderr
        assert f"{option} {doc_id!r}: " in done.stderr and why in done.stderr, done.stderr
        assert "nothing was changed" in done.stderr
        assert path.read_bytes() == before
    checked = _store_cli("store", "check", "--data-dir", str(data))
    assert (checked.returncode, checked.stdout) == (0, "store is sound\n")
    done = _store_cli("store", "repair", "--data-dir", str(data), "--reseed", KEY)
    assert done.returncode == 0 and f"{KEY}: " in done.stdout, done
