"""Three-way line merges as git merges a file's contents (xdiff's ``xdl_merge``).

Both sides are diffed against the base (:mod:`gitsync.merge.xdiff`); changes of one side are taken,
and wherever the two sides' changes touch or overlap, or both insert at the same place, the
region is a conflict unless both made the same change. Each conflict is then narrowed by
diffing the two sides' versions of it against each other (git's "zealous" level: a conflict
can split into several, and one where both sides agree disappears), and conflicts at most
three lines apart are joined, as ``git merge`` shows them. Conflicts are written with git's
layout: ``<<<<<<< ours-label``, ``=======``, ``>>>>>>> theirs-label``, a line ending added to
a side's last line if it lacks one, and CRLF marker lines where the surrounding lines and
the base use CRLF.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable, Sequence
from typing import AnyStr

from .xdiff import Algorithm, Change, LineCounts, diff_ids

__all__ = ["MARKER_SIZE", "merge_lines", "merge_resolving"]

MARKER_SIZE = 7
"""Length of the conflict marker runs (``<<<<<<<``); git lengthens it for nested merges."""
CONFLICT_GAP = 3
"""Conflicts at most this many common lines apart are shown as one, as git shows them."""

# a merge region: [mode, i0, chg0, i1, chg1, i2, chg2]; mode 0 conflict, 1 ours, 2 theirs,
# 4 both sides the same (found by refining a conflict); i1/i2 index the two sides' lines
_Region = list[int]


def merge_lines(
    base: Sequence[AnyStr],
    ours: Sequence[AnyStr],
    theirs: Sequence[AnyStr],
    labels: tuple[AnyStr, AnyStr],
    newline: AnyStr,
    *,
    marker_size: int = MARKER_SIZE,
    algorithm: Algorithm = "histogram",
    union: bool = False,
) -> tuple[list[AnyStr], int]:
    """Merge the lines of ``ours`` and ``theirs`` (each line with its line ending, the last
    one possibly without) from ``base``; return the merged lines and the number of
    conflicts. ``labels`` follow the ``<<<<<<<`` and ``>>>>>>>`` markers; ``newline`` is
    ``"\\n"`` (or ``b"\\n"``) in the lines' type.

    ``union`` (git's ``merge=union``): each conflict is both sides' lines, ours first,
    and none is counted."""
    hb, h1, h2 = _classes(base, ours, theirs)
    counted = LineCounts(hb)  # both diffs start from the base
    script1 = diff_ids(hb, h1, algorithm, counted)
    if not script1:
        return list(theirs), 0
    script2 = diff_ids(hb, h2, algorithm, counted)
    if not script2:
        return list(ours), 0
    regions = _regions(script1, script2, len(base), len(ours), len(theirs), h1, h2)
    regions = _refine(regions, h1, h2, algorithm)
    _join_close_conflicts(regions)
    if union:
        for region in regions:
            if region[0] == 0:
                region[0] = 3
    out = _fill(regions, base, ours, theirs, labels, newline, marker_size)
    return out, sum(1 for r in regions if r[0] == 0)


def merge_resolving(
    base: Sequence[AnyStr],
    ours: Sequence[AnyStr],
    theirs: Sequence[AnyStr],
    resolve: Callable[[Sequence[AnyStr], Sequence[AnyStr], Sequence[AnyStr]], list[AnyStr] | None],
    *,
    algorithm: Algorithm = "histogram",
) -> list[AnyStr] | None:
    """Merge as :func:`merge_lines` does, but hand each region where both sides' changes
    touch or overlap (base, ours and theirs lines of it, before any narrowing) to
    ``resolve``, whose lines take its place; ``None`` if ``resolve`` gives up on one."""
    hb, h1, h2 = _classes(base, ours, theirs)
    counted = LineCounts(hb)
    script1 = diff_ids(hb, h1, algorithm, counted)
    if not script1:
        return list(theirs)
    script2 = diff_ids(hb, h2, algorithm, counted)
    if not script2:
        return list(ours)
    out: list[AnyStr] = []
    i = 0
    for mode, i0, chg0, i1, chg1, i2, chg2 in _regions(
        script1, script2, len(base), len(ours), len(theirs), h1, h2
    ):
        out.extend(ours[i:i1])
        if mode == 0:
            resolved = resolve(base[i0 : i0 + chg0], ours[i1 : i1 + chg1], theirs[i2 : i2 + chg2])
            if resolved is None:
                return None
            out.extend(resolved)
        elif mode == 1:
            out.extend(ours[i1 : i1 + chg1])
        else:
            out.extend(theirs[i2 : i2 + chg2])
        i = i1 + chg1
    out.extend(ours[i:])
    return out


def _classes(*texts: Sequence[Hashable]) -> list[list[int]]:
    """Each text's lines as numbers, equal lines equal numbers."""
    distinct = dict.fromkeys(itertools.chain(*texts))
    ids = dict(zip(distinct, range(len(distinct)), strict=True))
    return [list(map(ids.__getitem__, text)) for text in texts]


def _append(regions: list[_Region], mode: int, *at: int) -> None:
    """xdl_append_merge: a region touching or overlapping the last one extends it (and is a
    conflict unless both are of the same side)."""
    i0, chg0, i1, chg1, i2, chg2 = at
    if regions:
        m = regions[-1]
        if i1 <= m[3] + m[4] or i2 <= m[5] + m[6]:
            if mode != m[0]:
                m[0] = 0
            m[2] = i0 + chg0 - m[1]
            m[4] = i1 + chg1 - m[3]
            m[6] = i2 + chg2 - m[5]
            return
    regions.append([mode, i0, chg0, i1, chg1, i2, chg2])


def _regions(
    s1: list[Change],
    s2: list[Change],
    n0: int,
    n1: int,
    n2: int,
    h1: list[int],
    h2: list[int],
) -> list[_Region]:
    """The two sides' changes (``(base index, side index, base count, side count)``) walked
    together into merge regions (xdl_do_merge)."""
    regions: list[_Region] = []
    a = b = 0
    while a < len(s1) and b < len(s2):
        x1, y1, c1, d1 = s1[a]
        x2, y2, c2, d2 = s2[b]
        if x1 + c1 < x2:
            _append(regions, 1, x1, c1, y1, d1, y2 - x2 + x1, c1)
            a += 1
            continue
        if x2 + c2 < x1:
            _append(regions, 2, x2, c2, y1 - x1 + x2, c2, y2, d2)
            b += 1
            continue
        if x1 != x2 or c1 != c2 or d1 != d2 or h1[y1 : y1 + d1] != h2[y2 : y2 + d2]:
            off = x1 - x2
            ffo = off + c1 - c2
            i0, i1, i2 = x1, y1, y2
            if off > 0:
                i0 -= off
                i1 -= off
            else:
                i2 += off
            chg0 = x1 + c1 - i0
            chg1 = y1 + d1 - i1
            chg2 = y2 + d2 - i2
            if ffo < 0:
                chg0 -= ffo
                chg1 -= ffo
            else:
                chg2 += ffo
            _append(regions, 0, i0, chg0, i1, chg1, i2, chg2)
        end1, end2 = x1 + c1, x2 + c2
        if end1 >= end2:
            b += 1
        if end2 >= end1:
            a += 1
    for x1, y1, c1, d1 in s1[a:]:
        _append(regions, 1, x1, c1, y1, d1, x1 + n2 - n0, c1)
    for x2, y2, c2, d2 in s2[b:]:
        _append(regions, 2, x2, c2, x2 + n1 - n0, c2, y2, d2)
    return regions


def _refine(
    regions: list[_Region], h1: list[int], h2: list[int], algorithm: Algorithm
) -> list[_Region]:
    """Narrow each conflict to the lines where the two sides differ (xdl_refine_conflicts):
    a diff of one side's lines against the other's; each of its changes is a conflict."""
    out: list[_Region] = []
    for m in regions:
        mode, i0, chg0, i1, chg1, i2, chg2 = m
        if mode != 0 or chg1 == 0 or chg2 == 0:
            out.append(m)
            continue
        script = diff_ids(h1[i1 : i1 + chg1], h2[i2 : i2 + chg2], algorithm)
        if not script:
            out.append([4, i0, chg0, i1, chg1, i2, chg2])
            continue
        for x, y, c, d in script:
            out.append([0, i0, chg0, i1 + x, c, i2 + y, d])
    return out


def _join_close_conflicts(regions: list[_Region]) -> None:
    """Join conflicts at most :data:`CONFLICT_GAP` lines apart (xdl_simplify_non_conflicts)."""
    i = 0
    while i + 1 < len(regions):
        m, nxt = regions[i], regions[i + 1]
        if m[0] != 0 or nxt[0] != 0 or nxt[3] - (m[3] + m[4]) > CONFLICT_GAP:
            i += 1
            continue
        m[4] = nxt[3] + nxt[4] - m[3]
        m[6] = nxt[5] + nxt[6] - m[5]
        del regions[i + 1]


def _like(nl: AnyStr, text: str) -> AnyStr:
    """``text`` in the type of ``nl`` (str, or bytes encoded as UTF-8)."""
    return text.encode() if isinstance(nl, bytes) else text


def _eol_crlf(lines: Sequence[AnyStr], i: int, crlf: AnyStr, nl: AnyStr) -> int:
    """1 if line ``i`` ends in CRLF, 0 if not, -1 if it cannot tell (is_eol_crlf): a last
    line without a line ending takes the line before's."""
    n = len(lines)
    if i < n - 1:
        return 1 if lines[i].endswith(crlf) else 0
    if not n:
        return -1
    if lines[i].endswith(nl):
        return 1 if lines[i].endswith(crlf) else 0
    if not i:
        return -1
    return 1 if lines[i - 1].endswith(crlf) else 0


def _copy(
    out: list[AnyStr], lines: Sequence[AnyStr], at: int, count: int, eol: AnyStr | None, nl: AnyStr
) -> None:
    """Lines ``at:at+count``; with ``eol``, a line ending added to the last if it lacks one."""
    if count < 1:
        return
    out.extend(lines[at : at + count])
    if eol is not None and not out[-1].endswith(nl):
        out[-1] += eol


def _fill(
    regions: list[_Region],
    base: Sequence[AnyStr],
    ours: Sequence[AnyStr],
    theirs: Sequence[AnyStr],
    labels: tuple[AnyStr, AnyStr],
    nl: AnyStr,
    marker_size: int,
) -> list[AnyStr]:
    """The merged lines (xdl_fill_merge_buffer), conflicts between markers."""
    crlf = _like(nl, "\r\n")
    start = _like(nl, "<" * marker_size + " ") + labels[0]
    middle = _like(nl, "=" * marker_size)
    end = _like(nl, ">" * marker_size + " ") + labels[1]

    def needs_cr(m: _Region) -> bool:
        """Whether this conflict's markers end in CRLF: the lines before it on both sides
        (the first lines, at the top) and the base's first line do (is_cr_needed)."""
        needs = _eol_crlf(ours, m[3] - 1 if m[3] else 0, crlf, nl)
        if needs:
            needs = _eol_crlf(theirs, m[5] - 1 if m[5] else 0, crlf, nl)
        if needs:
            needs = _eol_crlf(base, 0, crlf, nl)
        return needs > 0

    out: list[AnyStr] = []
    i = 0
    for m in regions:
        mode = m[0]
        if mode == 0:
            eol = crlf if needs_cr(m) else nl
            _copy(out, ours, i, m[3] - i, None, nl)
            out.append(start + eol)
            _copy(out, ours, m[3], m[4], eol, nl)
            out.append(middle + eol)
            _copy(out, theirs, m[5], m[6], eol, nl)
            out.append(end + eol)
        elif mode & 3:
            _copy(out, ours, i, m[3] - i, None, nl)
            if mode & 1:
                eol = crlf if needs_cr(m) else nl
                _copy(out, ours, m[3], m[4], eol if mode & 2 else None, nl)
            if mode & 2:
                _copy(out, theirs, m[5], m[6], None, nl)
        else:
            continue
        i = m[3] + m[4]
    _copy(out, ours, i, len(ours) - i, None, nl)
    return out
