"""Best common ancestors of commits, found and ordered as git finds them (``get_merge_bases``).

git walks both histories newest first (by committer date, ties in the order commits were
queued), collects the commits reached from both sides, drops those that are ancestors of
others, and returns the rest newest first. The order matters for merges: when there are
several, git merges them into a virtual base oldest first, and which one is "ours" in those
inner merges shows in their conflicts.

Commits are read raw and only their parents and committer date are parsed; both are kept in
a process-wide table (a commit's id fixes them, whatever repository it is in), so a server
that merges often walks history from memory. Commits that exist only in memory (the virtual
merge bases of a criss-cross merge) are added with :meth:`CommitGraph.add_virtual`.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable, Sequence

__all__ = ["CommitGraph", "clear_commit_cache", "merge_bases"]

_PARENT1, _PARENT2, _STALE, _RESULT = 1, 2, 4, 8

_CACHE_LIMIT = 1 << 18
_commits: dict[bytes, tuple[tuple[bytes, ...], int]] = {}


def clear_commit_cache() -> None:
    """Forget every commit read (benchmarks measure a cold start with it)."""
    _commits.clear()


def parse_commit(raw: bytes) -> tuple[tuple[bytes, ...], int]:
    """(parents, committer date) from a raw commit."""
    header = raw.split(b"\n\n", 1)[0]
    parents = []
    date = 0
    for line in header.split(b"\n"):
        if line.startswith(b"parent "):
            parents.append(line[7:47])
        elif line.startswith(b"committer "):
            fields = line.rsplit(b" ", 2)
            try:
                date = int(fields[-2])
            except (ValueError, IndexError):
                date = 0
    return tuple(parents), date


class CommitGraph:
    """Parents and dates of commits, read on demand through ``raw`` (hex id -> content)."""

    def __init__(self, raw: Callable[[bytes], bytes], shallow: Iterable[bytes] = ()) -> None:
        self.raw = raw
        self.shallow = frozenset(shallow)
        self.virtual: dict[bytes, tuple[tuple[bytes, ...], int]] = {}
        self._virtual_ids = itertools.count()

    def info(self, sha: bytes) -> tuple[tuple[bytes, ...], int]:
        """(parents, committer date) of commit ``sha``."""
        found = _commits.get(sha) or self.virtual.get(sha)
        if found is None:
            found = parse_commit(self.raw(sha))
            if len(_commits) >= _CACHE_LIMIT:
                _commits.clear()
            _commits[sha] = found
        if self.shallow and sha in self.shallow:
            return (), found[1]
        return found

    def date(self, sha: bytes) -> int:
        return self.info(sha)[1]

    def add_virtual(self, parents: Sequence[bytes]) -> bytes:
        """A commit that exists only here (date 0, as git makes them); its id."""
        sha = b"virtual-%d" % next(self._virtual_ids)
        self.virtual[sha] = (tuple(parents), 0)
        return sha


def _insert_by_date(graph: CommitGraph, result: list[bytes], commit: bytes) -> None:
    """commit_list_insert_by_date: after every commit at least as new."""
    date = graph.date(commit)
    at = 0
    while at < len(result) and graph.date(result[at]) >= date:
        at += 1
    result.insert(at, commit)


def _paint_down(
    graph: CommitGraph, one: bytes, twos: Sequence[bytes], flags: dict[bytes, int]
) -> list[bytes]:
    """paint_down_to_common: commits reached from ``one`` and from one of ``twos``, walking
    newest first (ties first queued, first out) while a queued commit is not known to be
    below a common one; ``flags`` is left with what the walk marked."""
    flags[one] = flags.get(one, 0) | _PARENT1
    if not twos:
        return [one]
    result: list[bytes] = []
    order = itertools.count()
    info = graph.info
    cached = _commits.get if not graph.shallow and not graph.virtual else (lambda _: None)
    push, pop = heapq.heappush, heapq.heappop
    # (newest first, then first queued), commit, its parents
    queue: list[tuple[int, int, bytes, tuple[bytes, ...]]] = []
    queued: dict[bytes, int] = {}  # entries of each commit in the queue
    for two in twos:
        flags[two] = flags.get(two, 0) | _PARENT2
    nonstale = 0
    for commit in (one, *twos):
        parents, date = info(commit)
        push(queue, (-date, next(order), commit, parents))
        queued[commit] = queued.get(commit, 0) + 1
        if not flags[commit] & _STALE:
            nonstale += 1
    while nonstale:
        _, _, commit, parents = pop(queue)
        queued[commit] -= 1
        mark = flags[commit]
        if not mark & _STALE:
            nonstale -= 1
        mark &= _PARENT1 | _PARENT2 | _STALE
        if mark == _PARENT1 | _PARENT2:
            if not flags[commit] & _RESULT:
                flags[commit] |= _RESULT
                _insert_by_date(graph, result, commit)
            mark |= _STALE
        for parent in parents:
            current = flags.get(parent, 0)
            if current & mark == mark:
                continue
            flags[parent] = current | mark
            if mark & _STALE and not current & _STALE:
                nonstale -= queued.get(parent, 0)
            entry = cached(parent) or info(parent)
            push(queue, (-entry[1], next(order), parent, entry[0]))
            queued[parent] = queued.get(parent, 0) + 1
            if not (current | mark) & _STALE:
                nonstale += 1
    return result


def _merge_bases_many(graph: CommitGraph, one: bytes, twos: Sequence[bytes]) -> list[bytes]:
    if one in twos:
        return [one]
    flags: dict[bytes, int] = {}
    found = _paint_down(graph, one, twos, flags)
    result: list[bytes] = []
    for commit in found:
        if not flags[commit] & _STALE:
            _insert_by_date(graph, result, commit)
    return result


def _remove_redundant(graph: CommitGraph, commits: list[bytes]) -> list[bytes]:
    """Those of ``commits`` that are not ancestors of another (remove_redundant_no_gen)."""
    redundant = [False] * len(commits)
    for i, commit in enumerate(commits):
        if redundant[i]:
            continue
        others = [j for j in range(len(commits)) if j != i and not redundant[j]]
        flags: dict[bytes, int] = {}
        _paint_down(graph, commit, [commits[j] for j in others], flags)
        if flags.get(commit, 0) & _PARENT2:
            redundant[i] = True
        for j in others:
            if flags.get(commits[j], 0) & _PARENT1:
                redundant[j] = True
    return [c for c, gone in zip(commits, redundant, strict=True) if not gone]


def merge_bases(graph: CommitGraph, one: bytes, twos: Sequence[bytes]) -> list[bytes]:
    """The best common ancestors of ``one`` and any of ``twos``, newest first, in git's
    order (get_merge_bases_many)."""
    result = _merge_bases_many(graph, one, twos)
    if one in twos or len(result) <= 1:
        return result
    kept = _remove_redundant(graph, result)
    ordered: list[bytes] = []
    for commit in kept:
        _insert_by_date(graph, ordered, commit)
    return ordered
