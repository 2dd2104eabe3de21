"""Turning "the text should now read X" into the smallest edits on a live ``Y.Text``.

Merges, pushes and other changes made outside the editors arrive as whole new file contents.
Replacing the whole text would clobber what people are typing and blow up the CRDT history;
instead the difference is computed line by line (then character by character inside changed
lines) and applied as a few inserts and deletes, so concurrent edits elsewhere survive.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from difflib import SequenceMatcher

from pycrdt import Text

__all__ = ["Edit", "apply_edits", "diff_edits"]


@dataclass(frozen=True, slots=True)
class Edit:
    """Replace ``length`` code points at ``index`` (of the *old* text) with ``insert``."""

    index: int
    length: int
    insert: str


def _common_affixes(a: str, b: str) -> tuple[int, int]:
    limit = min(len(a), len(b))
    start = 0
    while start < limit and a[start] == b[start]:
        start += 1
    end = 0
    while end < limit - start and a[len(a) - 1 - end] == b[len(b) - 1 - end]:
        end += 1
    return start, end


def _char_edits(old: str, new: str, offset: int) -> Iterator[Edit]:
    start, end = _common_affixes(old, new)
    if start == len(old) == len(new):
        return
    yield Edit(offset + start, len(old) - start - end, new[start : len(new) - end])


def diff_edits(old: str, new: str) -> list[Edit]:
    """Edits that turn ``old`` into ``new``, in ascending order, positions in ``old``."""
    if old == new:
        return []
    start, end = _common_affixes(old, new)
    # Work on whole lines around the changed middle, so the line matcher sees real lines.
    start = old.rfind("\n", 0, start) + 1
    old_mid, new_mid = old[start : len(old) - end], new[start : len(new) - end]
    old_lines = old_mid.splitlines(keepends=True)
    new_lines = new_mid.splitlines(keepends=True)
    matcher = SequenceMatcher(None, old_lines, new_lines, autojunk=False)
    edits: list[Edit] = []
    old_pos = [start]
    for line in old_lines:
        old_pos.append(old_pos[-1] + len(line))
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        old_chunk = "".join(old_lines[i1:i2])
        new_chunk = "".join(new_lines[j1:j2])
        edits.extend(_char_edits(old_chunk, new_chunk, old_pos[i1]))
    return edits


def apply_edits(text: Text, current: str, edits: list[Edit]) -> None:
    """Apply ``edits`` (computed against ``current``, the text's content) to ``text``.

    pycrdt indexes by UTF-8 byte, so positions are converted; edits are applied from the
    end backwards so earlier positions stay valid. Call inside one transaction.
    """
    for edit in reversed(edits):
        start = len(current[: edit.index].encode("utf-8"))
        if edit.length:
            stop = start + len(current[edit.index : edit.index + edit.length].encode("utf-8"))
            del text[start:stop]
        if edit.insert:
            text.insert(start, edit.insert)
