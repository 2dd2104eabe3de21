"""Everything the advertised refs of a repository reach, kept between fetches.

Partial clones fetch the objects their filter left out later, by id, one lazy fetch at a time
(a checkout, ``git log -p``); such an id is served only if an advertised ref reaches it, as
git's ``uploadpack.allowReachableSHA1InWant`` would, so that nothing a ref no longer reaches
(a rewound commit, a deleted branch, the server's private refs) can be fetched by id. A clone
of everything needs the same set. Walking a 10,000-file history for it takes a tenth of a
second, so the set is kept, per repository, for the ref values (tips) it was made from
(:data:`CACHE_OBJECTS` ids at most, all repositories together), as git keeps reachability
bitmaps.

The set is made from git's reachability bitmaps where the repository has them
(:mod:`gitsync.packs.bitmaps`: a repository packed by ``git gc``), walking only the commits made
since; else by walking the history. When the tips move on (a push, a continuous commit), the
set is extended with what the new tips add, walking only the new commits; if a tip went away
that the new tips do not reach (a force push, a deleted branch), it is made again.

A set made from bitmaps does not know the parents of the commits the bitmaps gave
(``Closure.commits`` maps them to no parents); that only makes the test of whether the new tips
reach all of the old ones fail more often, and the set be made again.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from ..packs.bitmaps import BitmapError, bitmap_for
from ..packs.source import BLOB, COMMIT, TAG, TREE
from .object_walk import History, list_objects

__all__ = ["CACHE_OBJECTS", "Closure", "closure"]

CACHE_OBJECTS = 4_000_000
"""Ids kept in cached sets, all repositories together."""


@dataclass(frozen=True, slots=True)
class Closure:
    """What ``tips`` reach: ``commits`` (id -> parents), and the ids of the trees and
    blobs, of annotated tags, and of objects that are neither a commit's nor below one (a
    tag's tree or blob)."""

    tips: frozenset[bytes]
    commits: dict[bytes, tuple[bytes, ...]]
    trees: frozenset[bytes]
    blobs: frozenset[bytes]
    tags: frozenset[bytes]

    def __contains__(self, sha: object) -> bool:
        return sha in self.commits or sha in self.trees or sha in self.blobs or sha in self.tags

    @property
    def size(self) -> int:
        return len(self.commits) + len(self.trees) + len(self.blobs) + len(self.tags)


_cache: collections.OrderedDict[str, Closure] = collections.OrderedDict()
_lock = threading.Lock()


def closure(history: History, key: str, tips: Iterable[bytes]) -> Closure:
    """What ``tips`` reach in ``history``'s repository (``key`` names it: its path)."""
    wanted = frozenset(tips)
    with _lock:
        previous = _cache.get(key)
        if previous is not None:
            _cache.move_to_end(key)
    if previous is not None and previous.tips == wanted:
        return previous
    made = None if previous is None else _extend(history, previous, wanted)
    if made is None:
        made = _from_bitmap(history, wanted) or _build(history, wanted, None)
    with _lock:
        _cache[key] = made
        _cache.move_to_end(key)
        total = sum(one.size for one in _cache.values())
        while total > CACHE_OBJECTS and len(_cache) > 1:
            _, dropped = _cache.popitem(last=False)
            total -= dropped.size
    return made


def forget(key: str) -> None:
    with _lock:
        _cache.pop(key, None)


def _peel_all(history: History, tips: Iterable[bytes]) -> tuple[set[bytes], set[bytes], set[bytes]]:
    """(commits, tags, other objects) that ``tips`` name, tags peeled."""
    commits: set[bytes] = set()
    tags: set[bytes] = set()
    others: set[bytes] = set()
    for tip in tips:
        sha, kind, chain = history.peel(tip)
        tags.update(chain)
        if kind == COMMIT:
            commits.add(sha)
        elif kind in (TREE, BLOB):
            others.add(sha)
    return commits, tags, others


def _build(history: History, tips: frozenset[bytes], base: Closure | None) -> Closure:
    """The closure of ``tips``, walking only what ``base`` (a closure that these tips reach
    all of) does not hold."""
    commits, tags, others = _peel_all(history, tips)
    parents: dict[bytes, tuple[bytes, ...]] = {} if base is None else dict(base.commits)
    new: list[bytes] = []
    stack = list(commits)
    while stack:
        sha = stack.pop()
        if sha in parents:
            continue
        parents[sha] = history.commit(sha).parents
        new.append(sha)
        stack.extend(parents[sha])
    have: set[bytes] = set() if base is None else set(base.trees) | set(base.blobs)
    named_trees = [sha for sha in others if history.objects.kind(sha) == TREE]
    named_blobs = [sha for sha in others if sha not in named_trees]
    listed = list_objects(history, new, have=have, trees=named_trees, blobs=named_blobs)
    trees = listed.trees if base is None else [*base.trees, *listed.trees]
    blobs = listed.blobs if base is None else [*base.blobs, *listed.blobs]
    all_tags = tags if base is None else tags | base.tags
    return Closure(tips, parents, frozenset(trees), frozenset(blobs), frozenset(all_tags))


def _from_bitmap(history: History, tips: frozenset[bytes]) -> Closure | None:
    """The closure of ``tips`` from git's reachability bitmap where it has one: the bitmaps of
    the nearest commits it covers, then a walk of the commits above them (made since it was
    written). None if there is no bitmap or it covers none of the history."""
    bitmap = bitmap_for(history.objects.packs)
    if bitmap is None:
        return None
    commits, _tags, _others = _peel_all(history, tips)
    frontier: list[bytes] = []
    seen: set[bytes] = set()
    stack = list(commits)
    while stack:
        sha = stack.pop()
        if sha in seen:
            continue
        seen.add(sha)
        if bitmap.covers(sha):
            frontier.append(sha)
        else:
            stack.extend(history.commit(sha).parents)
    if not frontier:
        return None
    try:
        bits = 0
        for sha in frontier:
            bits |= bitmap.reach(sha)
        found = bitmap.ids(bits)
    except BitmapError:
        return None
    base = Closure(
        frozenset(frontier),
        dict.fromkeys(found.get(COMMIT, []), ()),
        frozenset(found.get(TREE, [])),
        frozenset(found.get(BLOB, [])),
        frozenset(found.get(TAG, [])),
    )
    return _build(history, tips, base)


def _extend(history: History, previous: Closure, tips: frozenset[bytes]) -> Closure | None:
    """The closure of ``tips`` made from ``previous``, if ``tips`` reach all of it."""
    gone = previous.tips - tips
    if gone:
        commits, tags, others = _peel_all(history, tips)
        old_commits, old_tags, old_others = _peel_all(history, gone)
        if old_tags - tags or old_others - others:
            return None
        reached = _reach(history, commits, previous.commits)
        if not old_commits <= reached:
            return None
    return _build(history, tips, previous)


def _reach(
    history: History, starts: Iterable[bytes], known: dict[bytes, tuple[bytes, ...]]
) -> set[bytes]:
    """The commits ``starts`` reach, parents read from ``known`` where it has them."""
    seen: set[bytes] = set()
    stack = list(starts)
    while stack:
        sha = stack.pop()
        if sha in seen:
            continue
        seen.add(sha)
        parents = known.get(sha)
        if parents is None:
            parents = history.commit(sha).parents
        stack.extend(parents)
    return seen
