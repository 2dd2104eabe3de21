"""Rename detection for merges, with git's rules (diffcore-rename, as ``merge-ort`` calls it).

For one side of a merge: the files it deleted (sources) and added (destinations) are paired
in three rounds. Exact renames first (same blob; among several sources, one with the same
file name wins). Then files whose name is unique among the remaining sources and among the
remaining destinations are compared by name, and paired at a similarity of 75% or more (or a
destination found by a directory's likely new location, when names repeat). Then every
remaining destination is compared with every remaining source that matters to the merge
(the other side changed it, or a directory rename depends on it), each destination keeping
its four best candidates, and pairs are taken best first at 50% or more (git's default
``-M``). Nothing beyond exact renames is tried when more than 7,000 x 7,000 pairs would be
compared (git's ``merge.renameLimit``). Empty files are never paired.

Similarity is git's: both files cut into chunks (a line, or 64 bytes of a longer line; CR
before LF dropped in text), each chunk hashed into one of 107,927 buckets, and the bytes the
destination shares with the source, bucket by bucket, divided by the larger file's size.
"""

from __future__ import annotations

import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

__all__ = [
    "MAX_SCORE",
    "RENAME_SCORE",
    "DirRelevance",
    "File",
    "detect_renames",
    "hashmap_order",
    "similarity",
]

MAX_SCORE = 60000
RENAME_SCORE = 30000
"""50%: git's default rename threshold."""
_BASENAME_SCORE = RENAME_SCORE + (MAX_SCORE - RENAME_SCORE) // 2
_RENAME_LIMIT = 7000
_CANDIDATES = 4
_HASHBASE = 107927
_MASK32 = 0xFFFFFFFF
_SNIFF = 8000

RELEVANT_CONTENT = 1
RELEVANT_LOCATION = 2
RELEVANT_NO_MORE = 0


class DirRelevance:
    """Why a removed directory's renames are wanted (git's ``dir_rename_relevance``)."""

    NOT_RELEVANT = 0
    FOR_ANCESTOR = 1
    FOR_SELF = 2


UNKNOWN_DIR = "/"
"""A placeholder destination: a file of a removed directory whose rename is not known yet."""


@dataclass(slots=True)
class File:
    """A rename source (a deleted file) or destination (an added one)."""

    path: str
    mode: int
    sha: bytes
    used: bool = field(default=False)


_chunk_hashes: dict[bytes, int] = {}
_CHUNK_CACHE = 1 << 18


def _hash_chunk(chunk: bytes) -> int:
    found = _chunk_hashes.get(chunk)
    if found is not None:
        return found
    a1 = a2 = 0
    for c in chunk:
        old = a1
        a1 = ((a1 << 7) ^ (a2 >> 25)) & _MASK32
        a2 = ((a2 << 7) ^ (old >> 25)) & _MASK32
        a1 = (a1 + c) & _MASK32
    value = ((a1 + a2 * 0x61) & _MASK32) % _HASHBASE
    if len(_chunk_hashes) >= _CHUNK_CACHE:
        _chunk_hashes.clear()
    _chunk_hashes[chunk] = value
    return value


def span_counts(data: bytes) -> dict[int, int]:
    """Bytes per chunk hash (diffcore-delta's ``hash_chars``): chunks end after a LF or at 64
    bytes; a last chunk that does neither is not counted; in text (no NUL in the first 8000
    bytes) a CR before a LF is dropped."""
    if b"\0" not in data[:_SNIFF]:
        data = data.replace(b"\r\n", b"\n")
    counts: dict[int, int] = {}
    if b"\r" not in data:
        lines = data.splitlines(keepends=True)  # splits at LF only, when there is no CR
    else:
        lines = [part + b"\n" for part in data.split(b"\n")]
        last = lines.pop()[:-1]
        if last:
            lines.append(last)
    for line in lines:
        size = len(line)
        if size > 64:
            for at in range(0, size - 63, 64):
                key = _hash_chunk(line[at : at + 64])
                counts[key] = counts.get(key, 0) + 64
            rest = size % 64
            if not rest:
                continue
            line = line[size - rest :]
            size = rest
        if line[-1:] == b"\n" or size == 64:
            key = _hash_chunk(line)
            counts[key] = counts.get(key, 0) + size
    return counts


def similarity(src: bytes, dst: bytes, minimum: int = RENAME_SCORE) -> int:
    """How much of ``dst`` comes from ``src``, out of :data:`MAX_SCORE` (git's
    ``estimate_similarity`` for two regular files); 0 when their sizes differ too much for
    ``minimum`` to be reached."""
    return _score(len(src), len(dst), minimum, lambda: span_counts(src), lambda: span_counts(dst))


def _score(
    src_size: int,
    dst_size: int,
    minimum: int,
    src_counts: Callable[[], dict[int, int]],
    dst_counts: Callable[[], dict[int, int]],
) -> int:
    max_size = max(src_size, dst_size)
    delta = max_size - min(src_size, dst_size)
    if max_size * (MAX_SCORE - minimum) < delta * MAX_SCORE:
        return 0
    if not dst_size:
        return 0
    a, b = src_counts(), dst_counts()
    if len(b) < len(a):
        a, b = b, a
    copied = sum(min(n, b.get(k, 0)) for k, n in a.items())
    return copied * MAX_SCORE // max_size


def hashmap_order(keys: Iterable[str]) -> list[str]:
    """``keys`` (distinct, in the order they were added) in the order git's ``strmap``
    iterates them: buckets by FNV-1 hash of the path, each bucket newest first, in a table
    of 64 that grows fourfold past 80% full. Where git takes the first of several equal
    choices from such a map, this makes the same choice."""
    size = 64
    table: list[list[tuple[int, str]]] = [[] for _ in range(size)]
    for count, key in enumerate(keys, 1):
        h = _strhash(key)
        table[h & (size - 1)].insert(0, (h, key))
        if count > size * 80 // 100:
            old, size = table, size * 4
            table = [[] for _ in range(size)]
            for chain in old:
                for entry in chain:
                    table[entry[0] & (size - 1)].insert(0, entry)
    return [key for chain in table for _, key in chain]


def _strhash(text: str) -> int:
    h = 0x811C9DC5
    for c in text.encode("utf-8", "surrogateescape"):
        h = ((h * 0x01000193) & 0xFFFFFFFF) ^ c
    return h


def _dirname(path: str) -> str:
    at = path.rfind("/")
    return path[:at] if at >= 0 else ""


def _basename(path: str) -> str:
    return path[path.rfind("/") + 1 :]


def _basename_same(a: str, b: str) -> bool:
    return _basename(a) == _basename(b)


class _Detection:
    """One side's rename detection (diffcore_rename_extended)."""

    def __init__(
        self,
        sources: list[File],
        dests: list[File],
        relevant: dict[str, int],
        dirs_removed: dict[str, int],
        read: Callable[[bytes], bytes],
    ) -> None:
        self.sources = sources
        self.dests = dests
        self.relevant = relevant
        self.dirs_removed = dirs_removed
        self.read = read
        self.renamed: dict[int, int] = {}  # destination index -> source index
        self.dir_counts: dict[str, dict[str, int]] = {}
        self._counts: dict[bytes, dict[int, int]] = {}
        self._data: dict[bytes, bytes] = {}

    def data(self, sha: bytes) -> bytes:
        found = self._data.get(sha)
        if found is None:
            found = self._data[sha] = self.read(sha)
        return found

    def counts(self, sha: bytes) -> dict[int, int]:
        found = self._counts.get(sha)
        if found is None:
            found = self._counts[sha] = span_counts(self.data(sha))
        return found

    def score(self, src: File, dst: File, minimum: int) -> int:
        if not stat.S_ISREG(src.mode) or not stat.S_ISREG(dst.mode):
            return 0
        return _score(
            len(self.data(src.sha)),
            len(self.data(dst.sha)),
            minimum,
            lambda: self.counts(src.sha),
            lambda: self.counts(dst.sha),
        )

    def record(self, d: int, s: int) -> None:
        self.renamed[d] = s
        self.sources[s].used = True
        self.update_dir_counts(self.sources[s].path, self.dests[d].path)

    def update_dir_counts(self, old: str, new: str) -> None:
        """Count ``old``'s directories as renamed to ``new``'s (update_dir_rename_counts):
        the file's directory always, its parents while their names match and they were
        removed and need it."""
        old_parts, new_parts = old.split("/"), new.split("/")
        k = 1
        while True:
            old_dir = "/".join(old_parts[:-k]) if len(old_parts) > k else ""
            if old_dir not in self.dirs_removed:
                break
            new_dir = "/".join(new_parts[:-k]) if len(new_parts) > k else ""
            if k > 1 and old_parts[-k] != new_parts[-k]:
                break
            flag = self.dirs_removed.get(old_dir, DirRelevance.NOT_RELEVANT)
            if flag == DirRelevance.FOR_SELF or k == 1:
                self._increment(old_dir, new_dir)
            if flag == DirRelevance.NOT_RELEVANT or not old_dir or not new_dir:
                break
            k += 1

    def _increment(self, old_dir: str, new_dir: str) -> None:
        counts = self.dir_counts.setdefault(old_dir, {})
        counts[new_dir] = counts.get(new_dir, 0) + 1

    def run(self) -> None:
        if not self.sources or not self.dests:
            return
        self.exact()
        remaining = [i for i, s in enumerate(self.sources) if not s.used]
        guess, unrenamed = self.guesses()
        self.basenames(remaining, guess, unrenamed)
        remaining = [
            i
            for i in remaining
            if not self.sources[i].used and self.sources[i].path in self.relevant
        ]
        remaining = self.early_known_dir_renames(remaining)
        dests = [d for d in range(len(self.dests)) if d not in self.renamed]
        if not dests or not remaining:
            return
        if len(dests) * len(remaining) > _RENAME_LIMIT * _RENAME_LIMIT:
            return
        self.matrix(dests, remaining)

    def exact(self) -> None:
        by_sha: dict[bytes, list[int]] = {}
        for i, src in enumerate(self.sources):
            by_sha.setdefault(src.sha, []).append(i)
        for d, dst in enumerate(self.dests):
            best, best_score, tries = -1, -1, 100
            for s in by_sha.get(dst.sha, ()):
                src = self.sources[s]
                if (not stat.S_ISREG(src.mode) or not stat.S_ISREG(dst.mode)) and (
                    src.mode != dst.mode
                ):
                    continue
                if src.used:
                    continue
                score = 1 + _basename_same(src.path, dst.path)
                if score > best_score:
                    best, best_score = s, score
                    if score == 2:
                        break
                tries -= 1
                if not tries:
                    break
            if best >= 0:
                self.renamed[d] = best
                self.sources[best].used = True
                self.update_dir_counts(self.sources[best].path, dst.path)

    def guesses(self) -> tuple[dict[str, str], dict[str, int]]:
        """Where each removed directory most likely went (its renames so far), and the
        destinations not yet renamed by path (initialize_dir_rename_info)."""
        guess = {}
        for old_dir, counts in self.dir_counts.items():
            best, highest = "", 0
            for new_dir in hashmap_order(counts):  # the first of equal counts, as git's
                if counts[new_dir] > highest:
                    best, highest = new_dir, counts[new_dir]
            guess[old_dir] = best
        unrenamed = {dst.path: d for d, dst in enumerate(self.dests) if d not in self.renamed}
        return guess, unrenamed

    def basenames(
        self, remaining: list[int], guess: dict[str, str], unrenamed: dict[str, int]
    ) -> None:
        sources: dict[str, int] = {}
        for i in remaining:
            base = _basename(self.sources[i].path)
            sources[base] = -1 if base in sources else i
        dests: dict[str, int] = {}
        for d, dst in enumerate(self.dests):
            if d in self.renamed:
                continue
            base = _basename(dst.path)
            dests[base] = -1 if base in dests else d
        for i in remaining:
            src = self.sources[i]
            if src.path not in self.relevant:
                continue
            base = _basename(src.path)
            if base not in dests:
                continue
            s, d = sources[base], dests[base]
            if s == -1 or d == -1:
                s = i
                new_dir = guess.get(_dirname(src.path))
                d = -1 if new_dir is None else unrenamed.get(f"{new_dir}/{base}", -1)
            if d == -1 or d in self.renamed:
                continue
            if self.score(self.sources[s], self.dests[d], _BASENAME_SCORE) < _BASENAME_SCORE:
                continue
            self.record(d, s)

    def early_known_dir_renames(self, remaining: list[int]) -> list[int]:
        """Drop the sources wanted only for a directory rename whose majority is already
        known (handle_early_known_dir_renames)."""
        for i in remaining:
            old_dir = _dirname(self.sources[i].path)
            while old_dir and self.dirs_removed.get(old_dir, 0) != DirRelevance.NOT_RELEVANT:
                self._increment(old_dir, UNKNOWN_DIR)
                old_dir = _dirname(old_dir)
        for old_dir, counts in self.dir_counts.items():
            if self.dirs_removed.get(old_dir) == DirRelevance.FOR_SELF and _determinable(counts):
                self.dirs_removed[old_dir] = DirRelevance.FOR_ANCESTOR
        kept = []
        for i in remaining:
            path = self.sources[i].path
            if self.relevant.get(path) == RELEVANT_LOCATION:
                removable = True
                directory = _dirname(path)
                while True:
                    flag = self.dirs_removed.get(directory, DirRelevance.NOT_RELEVANT)
                    if flag == DirRelevance.NOT_RELEVANT:
                        break
                    if flag == DirRelevance.FOR_SELF:
                        removable = False
                        break
                    directory = _dirname(directory)
                if removable:
                    self.relevant[path] = RELEVANT_NO_MORE
                    continue
            kept.append(i)
        return kept

    def matrix(self, dests: list[int], sources: list[int]) -> None:
        """Every destination against every source, four best kept per destination, then
        the pairs best first (score, then same file name), ties in destination order."""
        cells: list[tuple[int, int, int, int]] = []  # (score, same name, dst, src)
        for d in dests:
            dst = self.dests[d]
            slots: list[tuple[int, int, int, int] | None] = [None] * _CANDIDATES
            for s in sources:
                src = self.sources[s]
                cell = (
                    self.score(src, dst, RENAME_SCORE),
                    int(_basename_same(src.path, dst.path)),
                    d,
                    s,
                )
                worst = 0
                for k in range(1, _CANDIDATES):
                    if _worse(slots[k], slots[worst]):
                        worst = k
                if _worse(slots[worst], cell):
                    slots[worst] = cell
            cells.extend(c for c in slots if c is not None)
        cells.sort(key=lambda c: (-c[0], -c[1]))  # stable: destination order kept
        for score, _, d, s in cells:
            if score < RENAME_SCORE:
                break
            if d in self.renamed or self.sources[s].used:
                continue
            self.record(d, s)


def _worse(a: tuple[int, int, int, int] | None, b: tuple[int, int, int, int] | None) -> bool:
    """Whether candidate ``a`` ranks below ``b`` (git's score_compare(a, b) > 0): unused
    slots rank lowest."""
    if a is None:
        return b is not None
    if b is None:
        return False
    if a[0] == b[0]:
        return b[1] > a[1]
    return b[0] > a[0]


def _determinable(counts: dict[str, int]) -> bool:
    first = second = unknown = 0
    for new_dir, n in counts.items():
        if new_dir == UNKNOWN_DIR:
            unknown = n
        elif n >= first:
            second, first = first, n
        elif n >= second:
            second = n
    return first > second + unknown


def detect_renames(
    sources: list[File],
    dests: list[File],
    relevant: dict[str, int],
    dirs_removed: dict[str, int],
    read: Callable[[bytes], bytes],
) -> tuple[dict[int, int], dict[str, dict[str, int]]]:
    """One side's renames: destination index -> source index, and, for the removed
    directories whose renames are wanted, how many files went to each new directory.

    ``sources`` and ``dests`` are the side's deleted and added files (empty ones left out),
    in tree order; ``relevant`` maps the sources worth an inexact search to why
    (:data:`RELEVANT_CONTENT`: the other side changed them; :data:`RELEVANT_LOCATION`: a
    directory rename may depend on them); ``dirs_removed`` maps the directories the side
    removed to their :class:`DirRelevance` (updated in place, as git does); ``read`` gives a
    blob's content by id."""
    detection = _Detection(sources, dests, relevant, dirs_removed, read)
    detection.run()
    counts = {
        old_dir: {new_dir: n for new_dir, n in targets.items() if new_dir != UNKNOWN_DIR}
        for old_dir, targets in detection.dir_counts.items()
        if dirs_removed.get(old_dir, DirRelevance.NOT_RELEVANT)
    }
    return detection.renamed, counts
