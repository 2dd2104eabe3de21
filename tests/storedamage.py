"""Damage a stopped server's store the way a bad disk does, for the tests of what the engine
makes of it."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

__all__ = ["flip_record", "stored_rows"]


def stored_rows(data_dir: Path, doc_id: str, table: str = "records") -> list[tuple[Any, ...]]:
    """The ``(seq, kind)`` of each of the document's rows in ``table``, in order."""
    with closing(sqlite3.connect(data_dir / "store.sqlite3")) as conn:
        return conn.execute(
            f"SELECT seq, kind FROM {table} WHERE doc_id = ? ORDER BY seq", (doc_id,)
        ).fetchall()


def flip_record(data_dir: Path, doc_id: str, seq: int) -> None:
    """Flip one bit in the middle of a record's data, leaving its checksum as it was."""
    with closing(sqlite3.connect(data_dir / "store.sqlite3")) as conn:
        (data,) = conn.execute(
            "SELECT data FROM records WHERE doc_id = ? AND seq = ?", (doc_id, seq)
        ).fetchone()
        damaged = bytearray(data)
        damaged[len(damaged) // 2] ^= 0x04
        conn.execute(
            "UPDATE records SET data = ? WHERE doc_id = ? AND seq = ?",
            (bytes(damaged), doc_id, seq),
        )
        conn.commit()
