"""Checking and repairing the SQLite store, offline: ``collab store check`` and ``repair``.

A damaged record (its checksum does not match, its data is missing) makes its document's
history incomplete, and a server quarantines such a document rather than serve or commit it.
A repair moves the damaged records aside, into the ``quarantine`` table where they stay for
inspection, and keeps every intact record that still applies. Records after a damaged one
often build on it (a typist's next keystrokes continue the text it inserted); those that add
nothing to the document without it are moved aside too, so that the history kept is exactly
the document served. The repaired document is marked ``recovered``: its clients, who hold
the whole history, send back what it lacks when they reconnect, and until its text has grown
back a commit that would shrink its file drastically is held (see ``collab.git.branch_sync``).

A document with nothing left to keep is seeded again from its branch head, as a new epoch,
when it is next opened; ``reseed`` does that on purpose, ``accept`` lifts the hold. So is a
document whose every record was on a damaged page of the file: the store's ``names`` table
(and its other tables) still name it, and the repair reports it lost and marks it recovered,
so that its seeding is said (a warning, a ``reseeded`` event), never silent.

A file whose header string alone is damaged is mended in place, once a copy with the string
put back has been read as a database.
"""

from __future__ import annotations

import itertools
import os
import shutil
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycrdt import Doc, Text

from protocol.errors import ProtocolError
from protocol.names import DocId

from ..live.seed import TEXT_NAME
from .sqlite_store import (
    HEADER,
    LAST_SEQ_SQL,
    SCHEMA,
    SET_LAST_SEQ_SQL,
    check_row,
    create_tables,
    header_damaged,
    quick_check,
)

__all__ = ["DocReport", "StoreReport", "UnknownDocument", "check", "repair"]

_PASS_THROUGH = (KeyboardInterrupt, SystemExit, GeneratorExit)

_Row = tuple[int, str, bytes]  # seq, kind, data


@dataclass(slots=True)
class DocReport:
    """One document's state, as found (``check``) or after a repair."""

    doc_id: str
    damaged: dict[int, str] = field(default_factory=dict)
    """Damaged records: seq -> why."""
    set_aside: dict[int, str] = field(default_factory=dict)
    """Records a repair moved to the quarantine table (damaged ones included): seq -> why."""
    kept: int = 0
    """Records of its history left in place."""
    text: str | None = None
    """The text its kept history holds (after a repair)."""
    recovered: bool = False
    """Marked as recovered after damage: shrinking commits of it are held."""
    lost: bool = False
    """Every record of its history was on a damaged page of the file (a repair found none)."""

    def describe(self) -> str:
        parts = []
        if self.lost:
            parts.append("its whole history was lost with a damaged page of the file")
        if self.damaged:
            first = min(self.damaged)
            parts.append(
                f"{len(self.damaged)} damaged record(s), the first seq {first}: "
                f"{self.damaged[first]}"
            )
        if self.set_aside:
            parts.append(f"{len(self.set_aside)} record(s) moved to the quarantine table")
        if self.text is not None:
            parts.append(f"{self.kept} record(s) kept, {len(self.text)} characters of text")
            if not self.kept:
                parts.append("seeded again from its branch head when next opened")
        if self.recovered:
            parts.append("recovered: commits that would shrink its file are held")
        return "; ".join(parts) or "sound"


@dataclass(slots=True)
class StoreReport:
    integrity: list[str]
    """What SQLite's ``quick_check`` found wrong with the file's pages (empty: nothing)."""
    docs: list[DocReport]
    """The documents with damaged records or a recovered mark."""

    @property
    def sound(self) -> bool:
        return not self.integrity and not any(doc.damaged for doc in self.docs)


class UnknownDocument(ValueError):
    """A document given to ``repair`` (``option``: ``--reseed`` or ``--accept``) that is
    not a document id, or that the store does not know: nothing was changed."""

    def __init__(self, option: str, doc_id: str, why: str) -> None:
        super().__init__(f"{option} {doc_id!r}: {why}")
        self.option = option
        self.doc_id = doc_id
        self.why = why


_HEADER_DAMAGED = "the file's header string is damaged"


def check(path: Path) -> StoreReport:
    """Look for damage without changing anything (a file whose header string is damaged is
    read from a copy with the string put back, removed after)."""
    with _mended_copy(path) as mended, closing(_connect(mended or path, read_only=True)) as conn:
        integrity = quick_check(conn)
        try:
            docs = _scan(conn)
        except sqlite3.DatabaseError as exc:
            integrity.append(f"records past a damaged page cannot be read: {exc}")
            docs = []
    if mended is not None:
        integrity.insert(0, f"{_HEADER_DAMAGED}: collab store repair restores it")
    return StoreReport(integrity, docs)


def repair(path: Path, *, reseed: Iterable[str] = (), accept: Iterable[str] = ()) -> StoreReport:
    """Repair every damaged document (see the module docstring); then move the whole
    history of each document in ``reseed`` aside (it is seeded again from its branch head),
    and lift the hold on each document in ``accept``. Returns what was done.

    Raises ``UnknownDocument``, before anything is changed, for a document of ``reseed``
    or ``accept`` that is not a document id or that the store does not know."""
    reseed, accept = list(reseed), list(accept)
    mended_header = False
    with _mended_copy(path) as mended:
        with closing(_connect(mended or path, read_only=True)) as conn:
            _refuse_unknown(conn, "--reseed", reseed)
            _refuse_unknown(conn, "--accept", accept)
        if mended is not None:
            _restore_header(path)
            mended_header = True
    with closing(_connect(path)) as conn:
        integrity = quick_check(conn)
    holes: dict[str, int] = {}
    lost: set[str] = set()
    if integrity:
        holes, lost = _rebuild(path)
    if mended_header:
        integrity.insert(0, f"{_HEADER_DAMAGED}: restored")
    with closing(_connect(path)) as conn:
        reports = {doc.doc_id: doc for doc in _scan(conn)}
        for doc_id, first_missing in holes.items():
            report = reports.setdefault(doc_id, DocReport(doc_id))
            report.damaged.setdefault(first_missing, "lost with a damaged page of the file")
        for doc_id in lost:  # marked recovered by the rebuild: seeded again, and said so
            report = reports.setdefault(doc_id, DocReport(doc_id))
            report.lost, report.recovered, report.kept, report.text = True, True, 0, ""
        now = time.time()
        for report in reports.values():
            if report.damaged:
                _repair_doc(conn, report, now)
        for doc_id in reseed:
            report = reports.setdefault(doc_id, DocReport(doc_id))
            rows = conn.execute("SELECT seq FROM records WHERE doc_id = ?", (doc_id,)).fetchall()
            aside = {seq: "history dropped by the operator (reseed)" for (seq,) in rows}
            _set_aside(conn, doc_id, aside, now, "reseeded by the operator")
            report.set_aside.update(aside)
            report.kept, report.text, report.recovered = 0, "", True
        for doc_id in accept:
            report = reports.setdefault(doc_id, DocReport(doc_id))
            with conn:
                conn.execute("DELETE FROM recovered WHERE doc_id = ?", (doc_id,))
            report.recovered = False
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return StoreReport(integrity, sorted(reports.values(), key=lambda report: report.doc_id))


def _refuse_unknown(conn: sqlite3.Connection, option: str, doc_ids: list[str]) -> None:
    """Raise ``UnknownDocument`` for the first of ``doc_ids`` that the store does not know,
    saying why: not a document id (``<repo>/<branch>:<path>``), one written otherwise than
    the store keys it, or one it has never held."""
    for doc_id in doc_ids:
        if _known(conn, doc_id):
            continue
        try:
            keyed = str(DocId.parse(doc_id))
        except (ProtocolError, ValueError) as exc:
            why = getattr(exc, "message", None) or str(exc)
            raise UnknownDocument(option, doc_id, f"not a document id: {why}") from None
        if keyed != doc_id and _known(conn, keyed):
            raise UnknownDocument(option, doc_id, f"give it as the store names it: {keyed}")
        raise UnknownDocument(option, doc_id, "the store knows no such document")


_NAMED_IN = ("records", "names", "docs", "recovered", "quarantine")
"""The tables that name documents (by ``doc_id``)."""


def _known(conn: sqlite3.Connection, doc_id: str) -> bool:
    """Whether any table of the store names ``doc_id`` (a damaged page that keeps the answer
    from being read counts as yes: the repair goes on, and reports what it finds)."""
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    for table in _NAMED_IN:
        if table not in tables:  # (a store of a version before it)
            continue
        try:
            sql = f"SELECT 1 FROM {table} WHERE doc_id = ? LIMIT 1"
            if conn.execute(sql, (doc_id,)).fetchone() is not None:
                return True
        except sqlite3.DatabaseError:
            return True
    return False


@contextmanager
def _mended_copy(path: Path) -> Iterator[Path | None]:
    """``None`` if the file's header string is intact (or the file too short to be a
    database); else a copy of the file (and its log) with the string put back, checked to
    read as a database, removed after the block. Raises ``sqlite3.DatabaseError`` (file is
    not a database) if even the copy does not read."""
    if not path.exists() or not header_damaged(path):
        yield None
        return
    copy = path.with_name(f"{path.name}.mended")
    copies = [copy, Path(f"{copy}-wal"), Path(f"{copy}-shm")]
    try:
        for leftover in copies:
            leftover.unlink(missing_ok=True)
        shutil.copyfile(path, copy)
        if Path(f"{path}-wal").exists():
            shutil.copyfile(f"{path}-wal", copies[1])
        with open(copy, "r+b") as file:
            file.write(HEADER)
        try:
            with closing(sqlite3.connect(copy, isolation_level=None)) as conn:
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError as exc:
            raise sqlite3.DatabaseError(
                f"file is not a database (not even with its header string put back: {exc})"
            ) from None
        yield copy
    finally:
        for leftover in copies:
            leftover.unlink(missing_ok=True)


def _restore_header(path: Path) -> None:
    """Write SQLite's header string back at the start of the file, durably."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, HEADER, 0)
        os.fsync(fd)
    finally:
        os.close(fd)


def _rebuild(path: Path) -> tuple[dict[str, int], set[str]]:
    """Copy what can still be read of a damaged file into a new one, and put the new one in
    its place (the old file and its log stay beside it, renamed ``*.damaged-<time>``).

    SQLite stops reading a table at a damaged page, so each table is read from both ends,
    and every document known by name (from any table) once more on its own: a damaged page
    then costs only the records on it. Returns the documents whose history now has a hole
    (document id -> the first sequence number missing), and those the ``names`` table
    names with no record left: their whole history was on damaged pages. Every document is
    marked recovered, those lost too (so that their seeding again is said, not silent)."""
    with closing(sqlite3.connect(path, isolation_level=None)) as src:
        src.execute("PRAGMA busy_timeout = 5000")
        records = {row[:2]: row for row in _both_ways(src, _RECORDS, ("doc_id", "seq"))}
        docs = {row[0]: row for row in _both_ways(src, "SELECT * FROM docs", ("doc_id",))}
        recovered = {row[0]: row for row in _both_ways(src, "SELECT * FROM recovered", ("doc_id",))}
        quarantine = {
            row[:2]: row for row in _both_ways(src, "SELECT * FROM quarantine", ("doc_id", "seq"))
        }
        authors = set(_both_ways(src, "SELECT branch, user FROM authors", ("branch", "user")))
        names = {row[0] for row in _both_ways(src, "SELECT doc_id FROM names", ("doc_id",))}
        known = {doc_id for doc_id, _seq in records} | set(docs) | set(recovered) | names
        known |= {doc_id for doc_id, _seq in quarantine}
        for doc_id in sorted(known):
            one = _both_ways(src, _RECORDS + " WHERE doc_id = ?", ("seq",), (doc_id,))
            records.update((row[:2], row) for row in one)
    holes: dict[str, int] = {}
    by_doc: dict[str, list[int]] = {}
    for doc_id, seq in sorted(records):
        by_doc.setdefault(doc_id, []).append(seq)
    # a document named with no record left lost them all (a deleted one is named no more)
    lost = names - set(by_doc)
    for doc_id, seqs in by_doc.items():
        gaps = [a + 1 for a, b in itertools.pairwise(seqs) if b != a + 1]
        first, kind = seqs[0], records[(doc_id, seqs[0])][2]
        deleted_at = docs[doc_id][1] if doc_id in docs else 0
        if kind != "s" and first > 1 and first != deleted_at + 1:
            holes[doc_id] = first - 1  # its start (a snapshot, the first updates) was lost
        elif gaps:
            holes[doc_id] = gaps[0]
    rebuilt = path.with_name(path.name + ".rebuilt")
    for leftover in (rebuilt, Path(f"{rebuilt}-wal"), Path(f"{rebuilt}-shm")):
        leftover.unlink(missing_ok=True)
    with closing(sqlite3.connect(rebuilt, isolation_level=None)) as dst:
        dst.executescript(SCHEMA)
        dst.execute("BEGIN")
        dst.executemany("INSERT INTO records VALUES (?, ?, ?, ?, ?)", records.values())
        dst.executemany("INSERT INTO docs VALUES (?, ?)", docs.values())
        dst.executemany("INSERT INTO recovered VALUES (?, ?, ?)", recovered.values())
        # which records a damaged page held is not known: every document is marked, so that
        # none whose history lost its start or its end is committed over its branch unseen
        # (the mark holds only commits that shrink a file drastically, and goes with the
        # first commit that does not)
        now = time.time()
        dst.executemany(
            "INSERT OR IGNORE INTO recovered VALUES (?, ?, ?)",
            [(doc_id, now, "rebuilt from a damaged file") for doc_id in by_doc],
        )
        dst.executemany(
            "INSERT OR REPLACE INTO recovered VALUES (?, ?, ?)",
            [(doc_id, now, "its history was lost with a damaged page") for doc_id in lost],
        )
        dst.executemany("INSERT INTO names VALUES (?)", [(doc_id,) for doc_id in by_doc])
        dst.executemany("INSERT INTO quarantine VALUES (?, ?, ?, ?, ?, ?, ?)", quarantine.values())
        dst.executemany("INSERT INTO authors VALUES (?, ?)", authors)
        dst.execute("COMMIT")
        dst.execute("PRAGMA journal_mode = WAL")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for suffix in ("", "-wal", "-shm"):
        old = Path(f"{path}{suffix}")
        if old.exists():
            os.replace(old, Path(f"{path}.damaged-{stamp}{suffix}"))
    os.replace(rebuilt, path)
    return holes, lost


_RECORDS = "SELECT doc_id, seq, kind, data, crc FROM records"


def _both_ways(
    conn: sqlite3.Connection, query: str, key: tuple[str, ...], params: tuple[Any, ...] = ()
) -> list[tuple[Any, ...]]:
    """The rows of ``query`` in the order of ``key``, read forwards and then backwards: a read
    stops at a damaged page, and what lies past it can still be reached from the other end."""
    found: list[tuple[Any, ...]] = []
    for direction in ("ASC", "DESC"):
        order = ", ".join(f"{column} {direction}" for column in key)
        try:
            for row in conn.execute(f"{query} ORDER BY {order}", params):
                found.append(row)
        except sqlite3.DatabaseError:
            continue
    return found


def _connect(path: Path, *, read_only: bool = False) -> sqlite3.Connection:
    """The store at ``path``; ``read_only``: opened so that nothing of it changes (no table
    made, no write-ahead log folded into the file or removed: after a crash, what is there
    is the evidence, until an operator copies it aside)."""
    if not path.exists():
        raise FileNotFoundError(f"no store at {path}")
    where = f"{path.resolve().as_uri()}?mode=ro" if read_only else str(path)
    conn = sqlite3.connect(where, uri=read_only, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 5000")
    if read_only:  # a file that is no database at all says so here, as below
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    else:
        create_tables(conn)
    return conn


def _scan(conn: sqlite3.Connection) -> list[DocReport]:
    """Every document with a damaged record or a recovered mark."""
    reports: dict[str, DocReport] = {}
    last: str | None = None
    index = 0
    for doc_id, seq, kind, data, crc in conn.execute(
        "SELECT doc_id, seq, kind, data, crc FROM records ORDER BY doc_id, seq"
    ):
        index = index + 1 if doc_id == last else 0
        last = doc_id
        reason = check_row(kind, data, crc, first=index == 0)
        if reason is not None:
            reports.setdefault(doc_id, DocReport(doc_id)).damaged[seq] = reason
    has_recovered = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'recovered'"
    ).fetchone()
    if has_recovered:  # (a store of a version before the mark: none recovered)
        for (doc_id,) in conn.execute("SELECT doc_id FROM recovered ORDER BY doc_id"):
            reports.setdefault(doc_id, DocReport(doc_id)).recovered = True
    return sorted(reports.values(), key=lambda report: report.doc_id)


def _repair_doc(conn: sqlite3.Connection, report: DocReport, now: float) -> None:
    rows = conn.execute(
        "SELECT seq, kind, data, crc FROM records WHERE doc_id = ? ORDER BY seq",
        (report.doc_id,),
    ).fetchall()
    aside = dict(report.damaged)
    applied: list[_Row] = []
    doc: Doc[Any] = Doc()
    for seq, kind, data, _crc in rows:
        if seq in aside:
            continue
        try:
            doc.apply_update(data)
        except BaseException as exc:
            if isinstance(exc, _PASS_THROUGH):
                raise
            aside[seq] = f"does not apply: {type(exc).__name__}: {exc}"
            continue
        applied.append((seq, kind, data))
    first_bad = min(aside)
    later = [row for row in applied if row[0] > first_bad]
    for row in _adding_nothing(applied, later, doc.get_update()):
        aside[row[0]] = f"builds on the damaged record {first_bad}"
        applied.remove(row)
    _set_aside(conn, report.doc_id, aside, now, f"{len(aside)} record(s) set aside")
    report.set_aside.update(aside)
    report.kept = len(applied)
    report.text = str(_replay(applied).get(TEXT_NAME, type=Text))
    report.recovered = True


def _adding_nothing(applied: list[_Row], later: list[_Row], full: bytes) -> list[_Row]:
    """Those of ``later`` (a part of ``applied``) whose removal leaves the document that
    ``applied`` makes the same: updates still waiting for something damaged (the CRDT keeps
    them pending, never part of the document), or repeats of updates kept."""
    if not later:
        return []
    later_seqs = {row[0] for row in later}
    if _replay([row for row in applied if row[0] not in later_seqs]).get_update() == full:
        return later  # the usual case: everything after the damage built on it
    kept = list(applied)
    removed = []
    for row in later:  # one at a time: of two repeats of one update, one stays
        trial = [other for other in kept if other is not row]
        if _replay(trial).get_update() == full:
            kept = trial
            removed.append(row)
    return removed


def _replay(rows: list[_Row]) -> Doc[Any]:
    doc: Doc[Any] = Doc()
    for _seq, _kind, data in rows:
        doc.apply_update(data)
    return doc


def _set_aside(
    conn: sqlite3.Connection, doc_id: str, aside: dict[int, str], now: float, note: str
) -> None:
    """Move the records ``aside`` (seq -> why) to the quarantine table and mark the
    document recovered, in one transaction; its sequence counter is kept. One left with no
    record is no longer in ``names``: a later damage cannot take what it no longer has."""
    with conn:
        conn.execute("BEGIN IMMEDIATE")
        (last_seq,) = conn.execute(LAST_SEQ_SQL, (doc_id,)).fetchone()
        for seq, reason in sorted(aside.items()):
            conn.execute(
                "INSERT OR REPLACE INTO quarantine (doc_id, seq, kind, data, crc, reason, at)"
                " SELECT doc_id, seq, kind, data, crc, ?, ? FROM records"
                " WHERE doc_id = ? AND seq = ?",
                (reason, now, doc_id, seq),
            )
            conn.execute("DELETE FROM records WHERE doc_id = ? AND seq = ?", (doc_id, seq))
        if last_seq:
            conn.execute(SET_LAST_SEQ_SQL, (doc_id, last_seq))
        if conn.execute("SELECT 1 FROM records WHERE doc_id = ?", (doc_id,)).fetchone() is None:
            conn.execute("DELETE FROM names WHERE doc_id = ?", (doc_id,))
        conn.execute(
            "INSERT OR REPLACE INTO recovered (doc_id, at, note) VALUES (?, ?, ?)",
            (doc_id, now, note),
        )
