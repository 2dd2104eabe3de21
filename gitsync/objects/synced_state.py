"""What each document's history held when a commit of the live documents was made.

A continuous commit takes the live documents' text; the store keeps their CRDT history. If
the store later loses part of that history (a damaged or truncated write-ahead log after a
crash: SQLite drops every frame from the damaged one on, silently), a document comes back
older than its branch's synced commit, and committing it would erase from the branch edits
that were already committed. So each commit of the live documents records, per path, the
document's Yjs state vector at the moment its text was taken; a document whose stored
history does not cover its record has lost history, and is not committed (see
``collab.live.epochs.history_lost``).

One file per branch, ``<git dir>/collab/synced-state/<sha1 of the branch name>``: a JSON
object with the branch name and ``path -> base64 state vector``, accumulated across commits
and replaced atomically (written aside, fsynced, renamed, directory fsynced). It is written
before the branch moves to the commit it describes, and only once the documents' stores hold
that state durably: absent damage, every stored document covers its record, whatever the
moment of a crash; a record that claimed less than was committed would leave a commit
unguarded. A record that cannot be read is treated as no record (nothing is checked).
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

__all__ = ["read_synced_state", "record_synced_state"]

log = logging.getLogger("gitsync.synced_state")

DIRECTORY = ("collab", "synced-state")


def _state_file(repo: Repo, branch: str) -> Path:
    digest = hashlib.sha1(branch.encode("utf-8"), usedforsecurity=False).hexdigest()
    return Path(repo.controldir(), *DIRECTORY, digest)


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
    try:
        data = json.loads(raw)
        if data.get("branch") != branch:
            return {}
        return {str(p): base64.b64decode(sv, validate=True) for p, sv in data["paths"].items()}
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
        log.warning("%s: the synced state of %s is damaged (%s); ignored", repo.path, branch, exc)
        return {}


def record_synced_state(repo: Repo, branch: str, states: Mapping[str, bytes]) -> None:
    """Add ``states`` (``path -> state vector``) to ``branch``'s record, durably."""
    if not states:
        return
    current = read_synced_state(repo, branch)
    if all(current.get(path) == sv for path, sv in states.items()):
        return
    current.update(states)
    _write(repo, branch, current)


def _write(repo: Repo, branch: str, states: Mapping[str, bytes]) -> None:
    path = _state_file(repo, branch)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "branch": branch,
        "paths": {p: base64.b64encode(sv).decode("ascii") for p, sv in sorted(states.items())},
    }
    aside = path.with_name(path.name + ".tmp")
    with aside.open("wb") as f:
        f.write(json.dumps(data, separators=(",", ":")).encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())
    os.replace(aside, path)
    fsync_directory(str(path.parent))
