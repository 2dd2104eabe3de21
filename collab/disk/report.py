"""What a working-tree sync tells the person running it: a one-line status (files synced,
pending, conflicts) and, for tools, a stream of events as JSON objects, one per line.

Events (each also has ``"time"``, seconds since the epoch):

- ``{"event": "ready", "dir", "repo", "branch", "files", "cloned"}``
- ``{"event": "sync", "path", "direction": "disk->live" | "live->disk" | "merged",
  "conflict"}``; ``direction`` is ``"git"`` for files committed instead of edited live
- ``{"event": "delete", "path", "side": "disk" | "live"}``: the deletion reached the other side
- ``{"event": "mode", "path", "mode": "100755" | "100644", "side": "disk" | "git"}``: the
  file was made executable (or not) on one side, and now is on that side too
- ``{"event": "conflict", "path", "reason"}``: a merge wrote conflict markers, or a file was
  changed on one side and deleted on the other (the change is kept)
- ``{"event": "error", "path", "message"}``: the path is retried later
- ``{"event": "paused", "checked_out", "message"}``: the tree has another branch (or a
  commit: ``"a detached HEAD"``) checked out; nothing is synced until the branch is again
- ``{"event": "resumed", "branch"}``: it is, and what changed meanwhile is synced
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

__all__ = ["Counters", "Reporter", "json_lines", "status_line"]

Reporter = Callable[[dict[str, Any]], None]
"""Receives each event."""


@dataclass(slots=True)
class Counters:
    """The figures of the status line."""

    synced: int = 0
    pending: int = 0
    conflicts: int = 0
    writes: int = 0  # files written to disk by the sync
    edits: int = 0  # files whose disk change became live edits
    pushes: int = 0  # commits pushed for binary files and deletions
    conflicted: set[str] = field(default_factory=set)

    def line(self) -> str:
        return (
            f"{self.synced} files synced, {self.pending} pending, {self.conflicts} with conflicts"
        )


def json_lines(out: TextIO | None = None) -> Reporter:
    """A reporter printing each event as one JSON line."""
    stream = out or sys.stdout

    def report(event: dict[str, Any]) -> None:
        stream.write(json.dumps({**event, "time": round(time.time(), 3)}) + "\n")
        stream.flush()

    return report


def status_line(counters: Counters, out: TextIO | None = None) -> Reporter:
    """A reporter keeping one status line up to date (on a terminal), else printing it
    when it changes."""
    stream = out or sys.stderr
    last = [""]

    def report(event: dict[str, Any]) -> None:
        line = counters.line()
        tty = stream.isatty()
        told = _told(event)
        if told is not None:
            clear = "\r\x1b[K" if tty else ""
            stream.write(f"{clear}{told}\n")
            if tty:
                last[0] = ""  # the status line was cleared: write it again
        if line == last[0]:
            return
        last[0] = line
        if tty:
            stream.write(f"\r\x1b[K{line}")
        else:
            stream.write(line + "\n")
        stream.flush()

    return report


def _told(event: dict[str, Any]) -> str | None:
    """The line the status line tells of ``event`` on its own, if any."""
    kind = event.get("event")
    if kind == "conflict":
        return f"conflict in {event['path']}: {event['reason']}"
    if kind == "paused":
        return str(event["message"])
    if kind == "resumed":
        return f"{event['branch']} is checked out again: the sync goes on"
    return None
