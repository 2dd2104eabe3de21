"""Working trees on disk: a live branch checked out in a directory and kept in two-way sync
with its documents (``collab sync``, and ``collab serve --worktree`` on the server)."""

from __future__ import annotations

from .report import Counters, json_lines, status_line
from .syncer import WorkingTree

__all__ = ["Counters", "WorkingTree", "json_lines", "status_line"]
