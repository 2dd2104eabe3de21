"""Line diffs that pair lines exactly as git's xdiff does: histogram (what ``git merge`` uses)
and Myers (git's default for ``diff`` and ``merge-file``, and histogram's fallback).

A merge is only git's merge if both sides' diffs against the base pair the same lines as
git's, so this follows xdiff's rules step by step rather than any diff that is merely minimal:
the histogram diff picks, in each region, the longest run of common lines among those whose
line occurs least often in the old side (lines occurring more than 64 times there are never
anchors; a region whose common lines all do falls back to Myers), and splits the region
around it; Myers is xdiff's, with its discarding of lines that cannot match and its cost
heuristics; the changed lines are then slid as xdiff slides them (``xdl_change_compact``,
without the indent heuristic, which ``git merge`` does not use). The functions work on any
sequences of hashable lines; the result is the list of changes, as ``xdl_build_script`` gives
them: ``(i1, i2, n1, n2)``, lines ``a[i1:i1+n1]`` replaced by ``b[i2:i2+n2]``, in order.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Hashable, Sequence
from typing import Literal

__all__ = ["Algorithm", "Change", "diff"]

Change = tuple[int, int, int, int]
Algorithm = Literal["histogram", "myers"]

_MAX_CHAIN = 64
"""A line occurring more often than this in the old side is never an anchor (xhistogram)."""
_MAX_EQLIMIT = 1024
_SIMSCAN_WINDOW = 100
_KPDIS_RUN = 4
_MAX_COST_MIN = 256
_HEUR_MIN_COST = 256
_SNAKE_CNT = 20
_K_HEUR = 4
_LINE_MAX = (1 << 63) - 1


def diff(
    a: Sequence[Hashable], b: Sequence[Hashable], algorithm: Algorithm = "histogram"
) -> list[Change]:
    """The changes from ``a`` to ``b``, as git's xdiff finds them (then compacted)."""
    distinct = dict.fromkeys([*a, *b])
    ids = dict(zip(distinct, range(len(distinct)), strict=True))
    return diff_ids(list(map(ids.__getitem__, a)), list(map(ids.__getitem__, b)), algorithm)


def diff_ids(
    ha: list[int],
    hb: list[int],
    algorithm: Algorithm = "histogram",
    counted: LineCounts | None = None,
) -> list[Change]:
    """:func:`diff` of two sequences of line classes (equal lines, equal ints).
    ``counted`` keeps what was counted of ``ha`` for another diff of ``ha``."""
    na, nb = len(ha), len(hb)
    # change flags with a sentinel on each side: line i is changed[i + 1]
    ca = bytearray(na + 2)
    cb = bytearray(nb + 2)
    if algorithm == "histogram":
        _histogram(ha, hb, ca, cb, 0, na, 0, nb, LineCounts(ha) if counted is None else counted)
    else:
        _myers(ha, hb, ca, cb, 0, na, 0, nb)
    _compact(ha, ca, cb)
    _compact(hb, cb, ca)
    return _script(ca, cb, na, nb)


def _histogram(
    a: list[int],
    b: list[int],
    ca: bytearray,
    cb: bytearray,
    lo1: int,
    n1: int,
    lo2: int,
    n2: int,
    counted: LineCounts,
) -> None:
    """Mark the changed lines of ``a[lo1:lo1+n1]`` against ``b[lo2:lo2+n2]`` (xhistogram.c).
    The regions left and right of each anchor are independent: a stack replaces recursion."""
    todo = [(lo1, n1, lo2, n2)]
    while todo:
        lo1, n1, lo2, n2 = todo.pop()
        if n1 <= 0 and n2 <= 0:
            continue
        if n1 <= 0:
            cb[lo2 + 1 : lo2 + n2 + 1] = b"\1" * n2
            continue
        if n2 <= 0:
            ca[lo1 + 1 : lo1 + n1 + 1] = b"\1" * n1
            continue
        if n1 == 1 or n2 == 1:  # one line on a side: its first match is the anchor
            single = _single_line_anchor(a, b, lo1, n1, lo2, n2)
            if single is not None:
                if single < 0:
                    ca[lo1 + 1 : lo1 + n1 + 1] = b"\1" * n1
                    cb[lo2 + 1 : lo2 + n2 + 1] = b"\1" * n2
                elif n1 == 1:
                    cb[lo2 + 1 : lo2 + n2 + 1] = b"\1" * n2
                    cb[single + 1] = 0
                else:
                    ca[lo1 + 1 : lo1 + n1 + 1] = b"\1" * n1
                    ca[single + 1] = 0
                continue
        found = _find_lcs(a, b, lo1, n1, lo2, n2, counted.region(lo1, n1), counted)
        if found is None:  # common lines, all too frequent: Myers on this region
            _myers(a[lo1 : lo1 + n1], b[lo2 : lo2 + n2], ca, cb, lo1, n1, lo2, n2)
            continue
        if not found:
            ca[lo1 + 1 : lo1 + n1 + 1] = b"\1" * n1
            cb[lo2 + 1 : lo2 + n2 + 1] = b"\1" * n2
            continue
        begin1, end1, begin2, end2 = found
        todo.append((end1 + 1, lo1 + n1 - 1 - end1, end2 + 1, lo2 + n2 - 1 - end2))
        todo.append((lo1, begin1 - lo1, lo2, begin2 - lo2))


class LineCounts:
    """How often each line of a sequence occurs in its regions, and where a line occurring
    once in the whole sequence is: kept for the diffs of that sequence (a merge diffs its
    base against both sides, whose first regions are the same)."""

    def __init__(self, lines: list[int]) -> None:
        self.lines = lines
        self.regions: dict[tuple[int, int], Counter[int]] = {}
        self.whole: Counter[int] | None = None
        self.first: dict[int, int] | None = None

    def region(self, lo: int, n: int) -> Counter[int]:
        found = self.regions.get((lo, n))
        if found is None:
            found = self.regions[lo, n] = Counter(self.lines[lo : lo + n])
            if lo == 0 and n == len(self.lines):
                self.whole = found
        return found

    def only_place(self, line: int, lo: int, hi: int) -> int:
        """Where ``line``, found once in ``lines[lo:hi + 1]``, is there."""
        whole = self.whole if self.whole is not None else self.region(0, len(self.lines))
        if whole[line] == 1:
            if self.first is None:
                self.first = dict(
                    zip(reversed(self.lines), range(len(self.lines) - 1, -1, -1), strict=True)
                )
            return self.first[line]
        return self.lines.index(line, lo, hi + 1)


def _find_lcs(
    a: list[int],
    b: list[int],
    lo1: int,
    n1: int,
    lo2: int,
    n2: int,
    counts: Counter[int],
    counted: LineCounts,
) -> tuple[int, int, int, int] | tuple[()] | None:
    """The anchor run of the region (first and last line on each side, inclusive); ``()``
    when the sides share no line; None when every shared line occurs more than 64 times in
    ``a``'s part (xdiff then falls back to Myers).

    As xhistogram's ``find_lcs``: ``b`` is scanned in order; at each line that occurs in
    ``a`` at most as often as the best run's rarest line, each occurrence in ``a`` (in
    order, skipping those inside the run just found) is extended both ways while lines
    match; a run replaces the best if it is longer, or if its rarest line is rarer.
    """
    end_a, end_b = lo1 + n1 - 1, lo2 + n2 - 1
    occurrences: dict[int, list[int]] = {}
    best_cnt = _MAX_CHAIN + 1
    has_common = False
    best_len = 0
    lcs: tuple[int, int, int, int] | None = None
    b_ptr = lo2
    while b_ptr <= end_b:
        b_next = b_ptr + 1
        line = b[b_ptr]
        count = counts.get(line)
        if count is not None:
            has_common = True
            if count <= best_cnt:
                if count == 1:
                    places: list[int] = [counted.only_place(line, lo1, end_a)]
                else:
                    found = occurrences.get(line)
                    if found is None:
                        found = occurrences[line] = _positions(a, line, lo1, end_a, count)
                    places = found
                ae = -1
                for at in places:
                    if at <= ae:
                        continue  # inside the run found from the previous occurrence
                    if at > lo1 and b_ptr > lo2 and a[at - 1] == b[b_ptr - 1]:
                        room = at - lo1
                        back = _common_backward(
                            a, at, b, b_ptr, room if room < b_ptr - lo2 else b_ptr - lo2
                        )
                    else:
                        back = 0
                    if at < end_a and b_ptr < end_b and a[at + 1] == b[b_ptr + 1]:
                        room = end_a - at
                        ahead = _common_forward(
                            a, at + 1, b, b_ptr + 1, room if room < end_b - b_ptr else end_b - b_ptr
                        )
                    else:
                        ahead = 0
                    start, ae = at - back, at + ahead
                    be = b_ptr + ahead
                    rc = count
                    if rc > 1:
                        rc = min(rc, min(map(counts.__getitem__, a[start : ae + 1])))
                    if b_next <= be:
                        b_next = be + 1
                    if best_len < ae - start or rc < best_cnt:
                        lcs = (start, ae, b_ptr - back, be)
                        best_len = ae - start
                        best_cnt = rc
        b_ptr = b_next
    if has_common and best_cnt > _MAX_CHAIN:
        return None
    return () if lcs is None else lcs


def _single_line_anchor(
    a: list[int], b: list[int], lo1: int, n1: int, lo2: int, n2: int
) -> int | None:
    """For a region with one line on a side, what :func:`_find_lcs` finds, quickly: the
    first place of that line on the other side (-1: nowhere). None when the line occurs
    more than 64 times in ``a``'s part (the general path falls back to Myers then)."""
    if n1 == 1:
        try:
            return b.index(a[lo1], lo2, lo2 + n2)
        except ValueError:
            return -1
    line, end = b[lo2], lo1 + n1
    try:
        first = a.index(line, lo1, end)
    except ValueError:
        return -1
    at = first
    for _ in range(_MAX_CHAIN):
        try:
            at = a.index(line, at + 1, end)
        except ValueError:
            return first
    return None


def _positions(a: list[int], line: int, first: int, last: int, count: int) -> list[int]:
    """The ``count`` places where ``line`` occurs in ``a[first:last + 1]``, in order."""
    out = [a.index(line, first, last + 1)]
    for _ in range(count - 1):
        out.append(a.index(line, out[-1] + 1, last + 1))
    return out


_GALLOP = 8


def _common_forward(a: list[int], i: int, b: list[int], j: int, limit: int) -> int:
    """How many lines match from ``a[i]`` and ``b[j]`` on (at most ``limit``)."""
    if limit <= 0 or a[i] != b[j]:
        return 0
    n, step = 1, _GALLOP
    while n < limit:
        size = step if step < limit - n else limit - n
        if a[i + n : i + n + size] == b[j + n : j + n + size]:
            n += size
            step += step
            continue
        while a[i + n] == b[j + n]:
            n += 1
        return n
    return n


def _common_backward(a: list[int], i: int, b: list[int], j: int, limit: int) -> int:
    """How many lines match going back from ``a[i - 1]`` and ``b[j - 1]`` (at most
    ``limit``)."""
    if limit <= 0 or a[i - 1] != b[j - 1]:
        return 0
    n, step = 1, _GALLOP
    while n < limit:
        size = step if step < limit - n else limit - n
        if a[i - n - size : i - n] == b[j - n - size : j - n]:
            n += size
            step += step
            continue
        while a[i - n - 1] == b[j - n - 1]:
            n += 1
        return n
    return n


def _bogosqrt(n: int) -> int:
    i = 1
    while n > 0:
        i <<= 1
        n >>= 2
    return i


def _myers(
    a: Sequence[int],
    b: Sequence[int],
    ca: bytearray,
    cb: bytearray,
    lo1: int,
    n1: int,
    lo2: int,
    n2: int,
) -> None:
    """xdiff's classic diff of ``a`` and ``b`` (whole sequences, which are lines
    ``lo1:lo1+n1`` and ``lo2:lo2+n2`` of the files whose change flags are ``ca``/``cb``):
    common ends trimmed, lines that cannot match discarded, then Myers with xdiff's
    heuristics on what is left."""
    count_a: dict[int, int] = {}
    count_b: dict[int, int] = {}
    for x in a:
        count_a[x] = count_a.get(x, 0) + 1
    for x in b:
        count_b[x] = count_b.get(x, 0) + 1
    shortest = min(n1, n2)
    start = 0
    while start < shortest and a[start] == b[start]:
        start += 1
    tail = 0
    while tail < shortest - start and a[n1 - 1 - tail] == b[n2 - 1 - tail]:
        tail += 1
    end1, end2 = n1 - 1 - tail, n2 - 1 - tail
    kept1 = _discard(a, count_b, start, end1, n1, ca, lo1)
    kept2 = _discard(b, count_a, start, end2, n2, cb, lo2)
    ha1 = [a[i] for i in kept1]
    ha2 = [b[i] for i in kept2]
    rindex1 = [lo1 + i for i in kept1]
    rindex2 = [lo2 + i for i in kept2]
    ndiags = len(ha1) + len(ha2) + 3
    kvdf = [0] * (2 * ndiags + 2)
    kvdb = [0] * (2 * ndiags + 2)
    shift = len(ha2) + 1
    mxcost = max(_bogosqrt(ndiags), _MAX_COST_MIN)
    env = _MyersEnv(ha1, ha2, rindex1, rindex2, ca, cb, kvdf, kvdb, shift, mxcost)
    env.compare(0, len(ha1), 0, len(ha2), False)


def _discard(
    lines: Sequence[int],
    other_counts: dict[int, int],
    start: int,
    end: int,
    total: int,
    changed: bytearray,
    offset: int,
) -> list[int]:
    """xdl_cleanup_records for one side: the positions in ``start..end`` kept for Myers;
    lines without a match on the other side are marked changed here, and so are lines with
    many matches inside runs of such lines."""
    mlim = min(_bogosqrt(total), _MAX_EQLIMIT)
    dis = bytearray(total + 1)
    for i in range(start, end + 1):
        nm = other_counts.get(lines[i], 0)
        dis[i] = 0 if nm == 0 else 2 if nm >= mlim else 1
    kept = []
    for i in range(start, end + 1):
        if dis[i] == 1 or (dis[i] == 2 and not _clean_mmatch(dis, i, start, end)):
            kept.append(i)
        else:
            changed[offset + i + 1] = 1
    return kept


def _clean_mmatch(dis: bytearray, i: int, s: int, e: int) -> bool:
    if i - s > _SIMSCAN_WINDOW:
        s = i - _SIMSCAN_WINDOW
    if e - i > _SIMSCAN_WINDOW:
        e = i + _SIMSCAN_WINDOW
    r, rdis0, rpdis0 = 1, 0, 1
    while i - r >= s:
        d = dis[i - r]
        if not d:
            rdis0 += 1
        elif d == 2:
            rpdis0 += 1
        else:
            break
        r += 1
    if rdis0 == 0:
        return False
    r, rdis1, rpdis1 = 1, 0, 1
    while i + r <= e:
        d = dis[i + r]
        if not d:
            rdis1 += 1
        elif d == 2:
            rpdis1 += 1
        else:
            break
        r += 1
    if rdis1 == 0:
        return False
    rdis1 += rdis0
    rpdis1 += rpdis0
    return rpdis1 * _KPDIS_RUN < rpdis1 + rdis1


class _MyersEnv:
    """xdl_recs_cmp and xdl_split over the lines kept by :func:`_discard`."""

    def __init__(
        self,
        ha1: list[int],
        ha2: list[int],
        rindex1: list[int],
        rindex2: list[int],
        ca: bytearray,
        cb: bytearray,
        kvdf: list[int],
        kvdb: list[int],
        shift: int,
        mxcost: int,
    ) -> None:
        self.ha1, self.ha2 = ha1, ha2
        self.rindex1, self.rindex2 = rindex1, rindex2
        self.ca, self.cb = ca, cb
        self.kvdf, self.kvdb = kvdf, kvdb
        self.shift = shift
        self.mxcost = mxcost

    def compare(self, off1: int, lim1: int, off2: int, lim2: int, need_min: bool) -> None:
        ha1, ha2 = self.ha1, self.ha2
        todo = [(off1, lim1, off2, lim2, need_min)]
        while todo:
            off1, lim1, off2, lim2, need_min = todo.pop()
            while off1 < lim1 and off2 < lim2 and ha1[off1] == ha2[off2]:
                off1 += 1
                off2 += 1
            while off1 < lim1 and off2 < lim2 and ha1[lim1 - 1] == ha2[lim2 - 1]:
                lim1 -= 1
                lim2 -= 1
            if off1 == lim1:
                for i in range(off2, lim2):
                    self.cb[self.rindex2[i] + 1] = 1
            elif off2 == lim2:
                for i in range(off1, lim1):
                    self.ca[self.rindex1[i] + 1] = 1
            else:
                i1, i2, min_lo, min_hi = self.split(off1, lim1, off2, lim2, need_min)
                todo.append((i1, lim1, i2, lim2, min_hi))
                todo.append((off1, i1, off2, i2, min_lo))

    def split(
        self, off1: int, lim1: int, off2: int, lim2: int, need_min: bool
    ) -> tuple[int, int, bool, bool]:
        ha1, ha2 = self.ha1, self.ha2
        kvdf, kvdb, z = self.kvdf, self.kvdb, self.shift
        dmin, dmax = off1 - lim2, lim1 - off2
        fmid, bmid = off1 - off2, lim1 - lim2
        odd = (fmid - bmid) & 1
        fmin = fmax = fmid
        bmin = bmax = bmid
        kvdf[fmid + z] = off1
        kvdb[bmid + z] = lim1
        ec = 0
        while True:
            ec += 1
            got_snake = False
            if fmin > dmin:
                fmin -= 1
                kvdf[fmin - 1 + z] = -1
            else:
                fmin += 1
            if fmax < dmax:
                fmax += 1
                kvdf[fmax + 1 + z] = -1
            else:
                fmax -= 1
            for d in range(fmax, fmin - 1, -2):
                left, right = kvdf[d - 1 + z], kvdf[d + 1 + z]
                i1 = left + 1 if left >= right else right
                prev1 = i1
                i2 = i1 - d
                while i1 < lim1 and i2 < lim2 and ha1[i1] == ha2[i2]:
                    i1 += 1
                    i2 += 1
                if i1 - prev1 > _SNAKE_CNT:
                    got_snake = True
                kvdf[d + z] = i1
                if odd and bmin <= d <= bmax and kvdb[d + z] <= i1:
                    return i1, i2, True, True
            if bmin > dmin:
                bmin -= 1
                kvdb[bmin - 1 + z] = _LINE_MAX
            else:
                bmin += 1
            if bmax < dmax:
                bmax += 1
                kvdb[bmax + 1 + z] = _LINE_MAX
            else:
                bmax -= 1
            for d in range(bmax, bmin - 1, -2):
                left, right = kvdb[d - 1 + z], kvdb[d + 1 + z]
                i1 = left if left < right else right - 1
                prev1 = i1
                i2 = i1 - d
                while i1 > off1 and i2 > off2 and ha1[i1 - 1] == ha2[i2 - 1]:
                    i1 -= 1
                    i2 -= 1
                if prev1 - i1 > _SNAKE_CNT:
                    got_snake = True
                kvdb[d + z] = i1
                if not odd and fmin <= d <= fmax and i1 <= kvdf[d + z]:
                    return i1, i2, True, True
            if need_min:
                continue
            if got_snake and ec > _HEUR_MIN_COST:
                best = 0
                found = (0, 0)
                for d in range(fmax, fmin - 1, -2):
                    dd = d - fmid if d > fmid else fmid - d
                    i1 = kvdf[d + z]
                    i2 = i1 - d
                    v = (i1 - off1) + (i2 - off2) - dd
                    if (
                        v > _K_HEUR * ec
                        and v > best
                        and off1 + _SNAKE_CNT <= i1 < lim1
                        and off2 + _SNAKE_CNT <= i2 < lim2
                    ):
                        k = 1
                        while ha1[i1 - k] == ha2[i2 - k]:
                            if k == _SNAKE_CNT:
                                best = v
                                found = (i1, i2)
                                break
                            k += 1
                if best > 0:
                    return found[0], found[1], True, False
                best = 0
                for d in range(bmax, bmin - 1, -2):
                    dd = d - bmid if d > bmid else bmid - d
                    i1 = kvdb[d + z]
                    i2 = i1 - d
                    v = (lim1 - i1) + (lim2 - i2) - dd
                    if (
                        v > _K_HEUR * ec
                        and v > best
                        and off1 < i1 <= lim1 - _SNAKE_CNT
                        and off2 < i2 <= lim2 - _SNAKE_CNT
                    ):
                        k = 0
                        while ha1[i1 + k] == ha2[i2 + k]:
                            if k == _SNAKE_CNT - 1:
                                best = v
                                found = (i1, i2)
                                break
                            k += 1
                if best > 0:
                    return found[0], found[1], False, True
            if ec >= self.mxcost:
                fbest = fbest1 = -1
                for d in range(fmax, fmin - 1, -2):
                    i1 = min(kvdf[d + z], lim1)
                    i2 = i1 - d
                    if lim2 < i2:
                        i1, i2 = lim2 + d, lim2
                    if fbest < i1 + i2:
                        fbest, fbest1 = i1 + i2, i1
                bbest = bbest1 = _LINE_MAX
                for d in range(bmax, bmin - 1, -2):
                    i1 = max(off1, kvdb[d + z])
                    i2 = i1 - d
                    if i2 < off2:
                        i1, i2 = off2 + d, off2
                    if i1 + i2 < bbest:
                        bbest, bbest1 = i1 + i2, i1
                if (lim1 + lim2) - bbest < fbest - (off1 + off2):
                    return fbest1, fbest - fbest1, True, False
                return bbest1, bbest - bbest1, False, True


def _compact(recs: list[int], changed: bytearray, other: bytearray) -> None:
    """Slide each group of changed lines as far up, then down, as equal lines allow, and
    settle it where it lines up with a change on the other side (xdl_change_compact, no
    indent heuristic). ``changed[i + 1]`` flags line ``i``.

    xdiff walks every "group" (the run of changed lines before each unchanged line, most of
    them empty) of both files in step; the k-th group of one file faces the k-th of the
    other. Only non-empty groups can move, so this jumps from one to the next, and finds
    the other file's k-th group from the positions of its unchanged lines.
    """
    n = len(recs)
    # the other file's runs of changed lines: unchanged lines before each, start, end
    runs_u: list[int] = []
    runs: list[tuple[int, int]] = []
    before = [0]  # changed lines before each run
    at = other.find(1, 1)
    while at >= 0:
        end = other.find(0, at)
        runs_u.append(at - 1 - before[-1])
        runs.append((at - 1, end - 1))
        before.append(before[-1] + end - at)
        at = other.find(1, end)

    def other_group(k: int) -> tuple[int, int]:
        """[start, end) of the other file's k-th group (the run before its k-th unchanged
        line)."""
        j = bisect.bisect_left(runs_u, k)
        if j < len(runs_u) and runs_u[j] == k:
            return runs[j]
        return k + before[j], k + before[j]

    at = changed.find(1, 1)
    k = at - 1  # the group's index: unchanged lines before it
    while at >= 0:
        g_start = at - 1
        g_end = changed.find(0, at) - 1
        go_start, go_end = other_group(k)
        while True:
            groupsize = g_end - g_start
            end_matching_other = -1
            while g_start > 0 and recs[g_start - 1] == recs[g_end - 1]:  # slide up
                g_start -= 1
                changed[g_start + 1] = 1
                g_end -= 1
                changed[g_end + 1] = 0
                while changed[g_start]:
                    g_start -= 1
                k -= 1
                go_start, go_end = other_group(k)
            earliest_end = g_end
            if go_end > go_start:
                end_matching_other = g_end
            while g_end < n and recs[g_start] == recs[g_end]:  # then down
                changed[g_start + 1] = 0
                g_start += 1
                changed[g_end + 1] = 1
                g_end += 1
                while changed[g_end + 1]:
                    g_end += 1
                k += 1
                go_start, go_end = other_group(k)
                if go_end > go_start:
                    end_matching_other = g_end
            if groupsize == g_end - g_start:
                break
        if g_end != earliest_end and end_matching_other != -1:
            while go_end == go_start:
                g_start -= 1
                changed[g_start + 1] = 1
                g_end -= 1
                changed[g_end + 1] = 0
                while changed[g_start]:
                    g_start -= 1
                k -= 1
                go_start, go_end = other_group(k)
        at = changed.find(1, g_end + 2)
        k += at - 1 - g_end  # the unchanged lines passed, from g_end on


def _script(ca: bytearray, cb: bytearray, na: int, nb: int) -> list[Change]:
    """The changes, in order, from the change flags (xdl_build_script): unchanged lines pair
    up in order, so each change is a run of changed lines of one file or both between two
    unchanged pairs."""
    out: list[Change] = []
    i1 = i2 = 0
    while i1 < na or i2 < nb:
        next1 = ca.find(1, i1 + 1, na + 1)
        next2 = cb.find(1, i2 + 1, nb + 1)
        if next1 < 0 and next2 < 0:
            break
        gap1 = (next1 - 1 - i1) if next1 >= 0 else na - i1
        gap2 = (next2 - 1 - i2) if next2 >= 0 else nb - i2
        step = min(gap1, gap2)
        i1 += step
        i2 += step
        end1 = ca.find(0, i1 + 1, na + 2) - 1
        end2 = cb.find(0, i2 + 1, nb + 2) - 1
        out.append((i1, i2, end1 - i1, end2 - i2))
        i1, i2 = end1, end2
    return out
