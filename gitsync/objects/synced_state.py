"""What each document's history held when a commit of the live documents was made.

A continuous commit takes the live documents' text; the store keeps their CRDT history. If
the store later loses part of that history (a damaged or truncated write-ahead log after a
crash: SQLite drops every frame from the damaged one on, silently), a document comes back
older than its branch's synced commit, and committing it would erase from the branch edits
that were already committed. So each commit of the live documents records, per path, the
document's Yjs state vector at the moment its text was taken; a document whose stored
history does not cover its record has lost history, and is not committed (see
``collab.live.epochs.history_lost``).

One file per branch, ``<git dir>/collab/synced-state/<sha1 of the branch name>``: JSON
lines, each ``{"branch": name, "paths": {path: base64 state vector}}`` holding what one
commit took, a later line overriding an earlier one's paths. A commit appends its line and
fsyncs it (the directory too when the file is new), so its cost is that of what it took, not
of every document the branch ever committed; once the file is more than twice as long as its
content needs (and over ``COMPACT_AT``), it is rewritten as one line, atomically (written
aside, fsynced, renamed, directory fsynced). A line is written before the branch moves to the
commit it describes, and only once the documents' stores hold that state durably: absent
damage, every stored document covers its record, whatever the moment of a crash; a record
that claimed less than was committed would leave a commit unguarded. A line that cannot be
read is passed over: the end of one torn by a crash (its commit was not made) silently, and
cut off at the next record; one damaged otherwise with a warning (the paths it held are not
checked).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

from dulwich.repo import Repo

from ..packs.write import fsync_directory
from ..repos import make_dirs_within

__all__ = ["forget_synced_state", "read_synced_state", "record_synced_state"]

log = logging.getLogger("gitsync.synced_state")

DIRECTORY = ("collab", "synced-state")


def _state_file(repo: Repo, branch: str) -> Path:
    digest = hashlib.sha1(branch.encode("utf-8"), usedforsecurity=False).hexdigest()
    return Path(repo.controldir(), *DIRECTORY, digest)


COMPACT_AT = 256 * 1024
"""A record file shorter than this is never compacted."""

_compacted: dict[Path, int] = {}
"""The length of each record file this process last compacted (or read whole)."""


def read_synced_state(repo: Repo, branch: str) -> dict[str, bytes]:
    """``path -> state vector`` recorded for ``branch`` (empty if none, or unreadable)."""
    path = _state_file(repo, branch)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        log.warning("%s: the synced state of %s cannot be read (%s)", repo.path, branch, exc)
        return {}
    return _parse(raw, branch, f"{repo.path}: the synced state of {branch}")


def _parse(raw: bytes, branch: str, what: str) -> dict[str, bytes]:
    states: dict[str, bytes] = {}
    lines = raw.split(b"\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            if data.get("branch") != branch:
                continue
            states.update(
                {str(p): base64.b64decode(sv, validate=True) for p, sv in data["paths"].items()}
            )
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
            if number < len(lines) or raw.endswith(b"\n"):  # not a torn last line
                log.warning("%s is damaged at line %d (%s); passed over", what, number, exc)
    return states


def record_synced_state(repo: Repo, branch: str, states: Mapping[str, bytes]) -> None:
    """Add ``states`` (``path -> state vector``) to ``branch``'s record, durably."""
    if not states:
        return
    path = _state_file(repo, branch)
    make_dirs_within(Path(repo.controldir()), path.parent)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            size = _mend_end(fd, size)
        line = _line(branch, states)
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    if not size:
        fsync_directory(str(path.parent))
    size += len(line)
    if size > max(COMPACT_AT, 2 * _compacted.get(path, 0)):
        _compact(repo, branch, path)


def forget_synced_state(repo: Repo, branch: str) -> None:
    """Remove ``branch``'s record (the branch is deleted)."""
    path = _state_file(repo, branch)
    _compacted.pop(path, None)
    path.unlink(missing_ok=True)


def _mend_end(fd: int, size: int) -> int:
    """End the file open at ``fd`` (``size`` bytes, the last not a line end) with a line
    end: after its last line if that one is whole (a record written as one object), else in
    place of that line (torn by a crash: its commit was not made). Returns the new size."""
    raw = os.pread(fd, size, 0)
    last = raw.rfind(b"\n") + 1
    try:
        json.loads(raw[last:])
    except ValueError:
        os.ftruncate(fd, last)
        return last
    os.write(fd, b"\n")
    return size + 1


def _line(branch: str, states: Mapping[str, bytes]) -> bytes:
    data = {
        "branch": branch,
        "paths": {p: base64.b64encode(sv).decode("ascii") for p, sv in sorted(states.items())},
    }
    return json.dumps(data, separators=(",", ":")).encode("utf-8") + b"\n"


def _compact(repo: Repo, branch: str, path: Path) -> None:
    """Rewrite ``path`` as the one line its content needs, if that is at most half of it."""
    raw = path.read_bytes()
    line = _line(branch, _parse(raw, branch, f"{repo.path}: the synced state of {branch}"))
    if 2 * len(line) > len(raw):
        _compacted[path] = len(raw)
        return
    aside = path.with_name(path.name + ".tmp")
    with aside.open("wb") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())
    os.replace(aside, path)
    fsync_directory(str(path.parent))
    _compacted[path] = len(line)
