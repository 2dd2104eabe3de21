"""The decision at the heart of the sync, as a pure function: given a file's last synced
text (the base), its text on disk and its live text, what each side must become.

Only the sides that moved since the base change anything: a disk edit becomes live edits, a
live edit is written to disk, and when both moved they are merged three-way, as git merges a
file; lines changed differently on both sides become conflict markers, on both sides. Nothing
either side did is dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gitsync.merge.plan import merge_text

from ..live.text_edits import diff_edits

__all__ = ["Outcome", "holds_change", "reconcile", "stale_base"]

LABELS = ("disk", "live")


@dataclass(frozen=True, slots=True)
class Outcome:
    """``live``/``disk``: the text that side must now hold (``None``: leave it as it is);
    ``base``: the new base once both hold it; ``conflict``: markers were written."""

    base: str
    live: str | None = None
    disk: str | None = None
    conflict: bool = False

    @property
    def direction(self) -> str:
        if self.live is not None and self.disk is not None:
            return "merged"
        if self.live is not None:
            return "disk->live"
        if self.disk is not None:
            return "live->disk"
        return "none"


def reconcile(base: str, disk: str, live: str) -> Outcome:
    """What to do with one file whose base, disk and live texts are given."""
    if disk == live:
        return Outcome(base=disk)
    if disk == base:
        return Outcome(base=live, disk=live)
    if live == base:
        return Outcome(base=disk, live=disk)
    merged, conflict = _merge(base, disk, live)
    return Outcome(
        base=merged,
        live=merged if merged != live else None,
        disk=merged if merged != disk else None,
        conflict=conflict,
    )


def holds_change(base: str, sent: str, text: str) -> bool:
    """Whether ``text`` holds the change ``base -> sent`` (it arrived, and more may have been
    done since, on its lines too): merging the change into ``text`` changes nothing. Lines
    are merged character by character, as the live text merges, so that typing on from a
    line the change wrote counts as holding it."""
    if text == sent:
        return True
    merged, conflict = merge_text(base, text, sent, characters=True)
    return not conflict and merged == text


def _merge(base: str, disk: str, live: str) -> tuple[str, bool]:
    """Merge line by line, as git merges a file, at the texts' line ending."""
    return merge_text(base, disk, live, labels=LABELS, newline=_newline(base, disk, live))


def _newline(*texts: str) -> str:
    """LF (which CRLF ends in too), or CR when no text has a LF but one has a CR (classic
    Mac OS line endings): merged at LFs, such a file would be a single line, so any two
    edits of it would conflict, and the conflict markers would add LFs to it."""
    if any("\n" in text for text in texts) or not any("\r" in text for text in texts):
        return "\n"
    return "\r"


def stale_base(disk: str, versions: Sequence[str]) -> str:
    """Of ``versions``, the text the file held before each of the syncer's last writes
    (oldest first) and then what it wrote, the one a save that came just after was made
    from. An editor's buffer that missed some of the writes (a stale buffer, one of several
    saves in a row) holds one of them and what the user typed: the version the save differs
    least from, the newest of those. Merged against it, the save keeps every write it lacks,
    whether or not they touch the lines it changed (those then conflict); a save made after
    reloading is made from the last, and takes nothing back."""
    return min(reversed(versions), key=lambda version: _distance(version, disk))


def _distance(old: str, new: str) -> int:
    """How many characters an edit from ``old`` to ``new`` deletes and inserts."""
    return sum(edit.length + len(edit.insert) for edit in diff_edits(old, new))
