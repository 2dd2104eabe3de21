"""The last synced state of a working tree, recorded inside it: for each file, the content
that the disk and the live document both had when they last agreed (the base of the next
three-way merge), and the branch head the tree last caught up with, with the files that head
changed whose sync has not run yet (a syncer killed before it wrote them syncs them at its next
start: the head no longer tells they changed). Before a side is changed,
the text both sides are about to hold is noted as *sent*, with the sides it is about to change:
if the syncer dies before the server acknowledges it, the next start finds out from those
sides whether it arrived.

It lives in ``DIR/.git/collab-sync.sqlite`` (SQLite, WAL), so that edits made while the
syncer was stopped or offline are merged against it on the next start, and a crash between
writing a file and recording it leaves at worst a base one step old, which the merge handles
(both sides then made the same change).
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = ["LOCK_FILE", "STATE_FILE", "SyncState", "digest"]

STATE_FILE = "collab-sync.sqlite"
LOCK_FILE = "collab-sync.lock"
"""Beside the state, locked by the syncer that keeps the tree in sync (it holds its pid)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, digest TEXT NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sent (
    path TEXT PRIMARY KEY, digest TEXT NOT NULL, data BLOB NOT NULL, live INTEGER NOT NULL,
    disk INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS due (path TEXT PRIMARY KEY);
"""


def digest(data: bytes) -> str:
    """The content hash by which a file's content is recognised (own writes, bases)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


class SyncState:
    """Per-file bases and a few named values, durable on every change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._digests: dict[str, str] = dict(
            self._db.execute("SELECT path, digest FROM files").fetchall()
        )
        self._by_digest: dict[str, set[str]] = {}  # digest -> the paths whose base has it
        for file, key in self._digests.items():
            self._by_digest.setdefault(key, set()).add(file)
        self._due: set[str] = {row[0] for row in self._db.execute("SELECT path FROM due")}

    def close(self) -> None:
        self._db.close()

    def paths(self) -> list[str]:
        return sorted(self._digests)

    def paths_with(self, key: str) -> set[str]:
        """The paths whose base has the hash ``key``."""
        return set(self._by_digest.get(key, ()))

    def _index(self, path: str, key: str | None) -> None:
        """``path``'s base now has the hash ``key`` (``None``: it has none)."""
        old = self._digests.get(path)
        if old is not None and old != key:
            paths = self._by_digest[old]
            paths.discard(path)
            if not paths:
                del self._by_digest[old]
        if key is not None:
            self._by_digest.setdefault(key, set()).add(path)

    def digest_of(self, path: str) -> str | None:
        """The hash of ``path``'s base, without reading it; ``None`` if it has none."""
        return self._digests.get(path)

    def base(self, path: str) -> bytes | None:
        """What disk and live last agreed ``path`` holds; ``None``: no base (a new file)."""
        if path not in self._digests:
            return None
        row = self._db.execute("SELECT data FROM files WHERE path = ?", (path,)).fetchone()
        return None if row is None else bytes(row[0])

    def set_base(self, path: str, data: bytes) -> None:
        key = digest(data)
        if self._digests.get(path) == key:
            return
        self._db.execute(
            "INSERT OR REPLACE INTO files (path, digest, data) VALUES (?, ?, ?)", (path, key, data)
        )
        self._index(path, key)
        self._digests[path] = key

    def set_bases(self, bases: Mapping[str, bytes]) -> None:
        """Record many bases in one transaction; the sent texts they settle are dropped."""
        rows = [(path, digest(data), data) for path, data in bases.items()]
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO files (path, digest, data) VALUES (?, ?, ?)", rows
            )
            self._db.executemany(
                "DELETE FROM sent WHERE path = ? AND digest = ?", [row[:2] for row in rows]
            )
        for path, key, _data in rows:
            self._index(path, key)
            self._digests[path] = key

    def note_sent(self, path: str, data: bytes, *, live: bool, disk: bool) -> None:
        """``data`` is about to be the text of both sides; ``live`` and ``disk`` say which of
        them it changes (see the module docstring)."""
        self._db.execute(
            "INSERT OR REPLACE INTO sent (path, digest, data, live, disk) VALUES (?, ?, ?, ?, ?)",
            (path, digest(data), data, int(live), int(disk)),
        )

    def sent(self, path: str) -> tuple[bytes, bool, bool] | None:
        """The text noted as sent for ``path``, and whether it changes the live side and the
        disk; ``None`` if nothing is outstanding."""
        row = self._db.execute(
            "SELECT data, live, disk FROM sent WHERE path = ?", (path,)
        ).fetchone()
        return None if row is None else (bytes(row[0]), bool(row[1]), bool(row[2]))

    def sent_paths(self) -> list[str]:
        return [row[0] for row in self._db.execute("SELECT path FROM sent")]

    def forget(self, paths: Iterable[str]) -> None:
        """``paths`` no longer exist on either side."""
        gone = []
        for path in paths:
            if path in self._digests:
                self._index(path, None)
                del self._digests[path]
                gone.append((path,))
        if gone:
            self._db.executemany("DELETE FROM files WHERE path = ?", gone)
            self._db.executemany("DELETE FROM sent WHERE path = ?", gone)

    def set_head(self, head: str, due: Iterable[str] = ()) -> None:
        """Record ``head`` as the branch head the tree caught up with, and ``due``, the files
        it changed that are still to be synced, in one transaction."""
        added = [path for path in dict.fromkeys(due) if path not in self._due]
        with self._db:
            self._db.execute("BEGIN")
            rows = [(path,) for path in added]
            self._db.executemany("INSERT OR IGNORE INTO due (path) VALUES (?)", rows)
            self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('head', ?)", (head,))
        self._due.update(added)

    def due(self) -> set[str]:
        """The files a recorded head changed whose sync has not run to its end yet."""
        return set(self._due)

    def synced(self, path: str) -> None:
        """A sync of ``path`` ran to its end after it was due: it is no longer."""
        if path in self._due:
            self._db.execute("DELETE FROM due WHERE path = ?", (path,))
            self._due.discard(path)

    def reset(self) -> None:
        """Forget everything recorded (it was of another branch)."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM files")
            self._db.execute("DELETE FROM meta")
            self._db.execute("DELETE FROM sent")
            self._db.execute("DELETE FROM due")
        self._digests.clear()
        self._by_digest.clear()
        self._due.clear()

    def get(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def put(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))
