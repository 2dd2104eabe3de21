"""Which objects a fetch sends: the commits its wants reach and its haves do not, as git's
``rev-list`` limits them, then every tree and blob of those commits that the client does not
already hold, less what an object filter leaves out.

- :class:`History` reads commits (tree, parents, commit time) once per request.
- :func:`limit_commits` walks newest first from the interesting commits and the
  uninteresting ones together, as git's ``limit_list`` does: a commit reached from an
  uninteresting one is uninteresting, and so are its ancestors; the walk stops once only
  uninteresting commits are left (after a few more, for clocks that disagree). ``grafts``
  are commits taken to have no parents (the shallow boundaries of a shallow clone).
- :func:`list_objects` lists the commits' trees and blobs, less those of the edge commits (the
  uninteresting parents of sent commits, whose trees the client has) and those an
  :class:`~gitsync.wire.object_filter.ObjectFilter` omits.

The shallow boundaries themselves (``deepen``, ``deepen-since``, ``deepen-not``) are computed
by :mod:`gitsync.wire.shallow`.
"""

from __future__ import annotations

import heapq
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from dulwich._objects import parse_tree

from ..packs.source import COMMIT, TAG, TREE, StoredObjects
from .object_filter import ObjectFilter

__all__ = [
    "SLOP",
    "CommitInfo",
    "History",
    "Listed",
    "NotACommit",
    "limit_commits",
    "list_objects",
    "tree_closure",
]

SLOP = 5
"""Uninteresting commits walked past the last interesting one (git's ``SLOP``)."""
_DIR, _GITLINK = 0o040000, 0o160000


class NotACommit(ValueError):
    """An object that should be a commit is something else, or is missing."""


@dataclass(frozen=True, slots=True)
class CommitInfo:
    tree: bytes
    parents: tuple[bytes, ...]
    time: int


def parse_commit(raw: bytes) -> CommitInfo:
    """The tree, parents and commit time of a raw commit (whose headers fsck has checked
    when it was received, or git wrote)."""
    end = raw.find(b"\n\n")
    header = raw if end < 0 else raw[:end]
    tree = b""
    parents: list[bytes] = []
    when = 0
    for line in header.split(b"\n"):
        if line.startswith(b"tree "):
            tree = line[5:45]
        elif line.startswith(b"parent "):
            parents.append(line[7:47])
        elif line.startswith(b"committer "):
            parts = line.rsplit(b" ", 2)
            if len(parts) == 3 and parts[1].isdigit():
                when = int(parts[1])
            break
    if len(tree) != 40:
        raise NotACommit("a commit without a tree")
    return CommitInfo(tree, tuple(parents), when)


class History:
    """The commits, tags and trees of one :class:`StoredObjects`, read on demand."""

    def __init__(self, objects: StoredObjects) -> None:
        self.objects = objects
        self._commits: dict[bytes, CommitInfo] = {}

    def commit(self, sha: bytes) -> CommitInfo:
        info = self._commits.get(sha)
        if info is None:
            try:
                kind, raw = self.objects.raw(sha)
            except KeyError:
                raise NotACommit(f"missing commit {sha.decode('ascii', 'replace')}") from None
            if kind != COMMIT:
                raise NotACommit(f"{sha.decode('ascii')} is not a commit")
            info = self._commits[sha] = parse_commit(raw)
        return info

    def peel(self, sha: bytes) -> tuple[bytes, int, list[bytes]]:
        """What ``sha`` is once its tags are peeled: (id, type, the tags on the way); type
        0 if it is missing."""
        tags: list[bytes] = []
        for _ in range(64):
            try:
                kind, raw = self.objects.raw(sha)
            except KeyError:
                return sha, 0, tags
            if kind != TAG:
                if kind == COMMIT:
                    self._commits.setdefault(sha, parse_commit(raw))
                return sha, kind, tags
            tags.append(sha)
            if not raw.startswith(b"object ") or len(raw) < 47:
                return sha, 0, tags
            sha = raw[7:47]
        return sha, 0, tags

    def tree(self, sha: bytes) -> list[tuple[bytes, int, bytes]]:
        kind, raw = self.objects.raw(sha)
        if kind != TREE:
            raise ValueError(f"{sha.decode('ascii')} is not a tree")
        return list(parse_tree(raw, 20))


@dataclass(frozen=True, slots=True)
class Limited:
    """The commits to send, newest first, and the edges: the uninteresting commits that are
    parents of sent ones (the client has them, trees included)."""

    commits: list[bytes]
    edges: list[bytes]


def limit_commits(
    history: History,
    interesting: Iterable[bytes],
    uninteresting: Iterable[bytes] = (),
    *,
    grafts: frozenset[bytes] = frozenset(),
    max_age: int | None = None,
) -> Limited:
    """Commits reachable from ``interesting`` and not from ``uninteresting`` (see the module's
    docstring); ``max_age`` makes commits older than it (seconds since the epoch)
    uninteresting, as ``rev-list --max-age`` does."""
    bad: dict[bytes, bool] = {}
    """Commits met: True when uninteresting."""
    done: set[bytes] = set()
    heap: list[tuple[int, int, bytes]] = []
    good_queued: set[bytes] = set()
    order: list[bytes] = []
    counter = 0

    def parents(sha: bytes) -> tuple[bytes, ...]:
        return () if sha in grafts else history.commit(sha).parents

    def mark_bad(sha: bytes) -> None:
        stack = [sha]
        while stack:
            one = stack.pop()
            if bad.get(one):
                continue
            bad[one] = True
            good_queued.discard(one)
            if one in done:
                stack.extend(parent for parent in parents(one) if parent in bad)

    def push(sha: bytes, uninteresting: bool) -> None:
        nonlocal counter
        if sha in bad:
            if uninteresting:
                mark_bad(sha)
            return
        when = history.commit(sha).time
        bad[sha] = uninteresting
        counter += 1
        heapq.heappush(heap, (-when, counter, sha))
        if not uninteresting:
            good_queued.add(sha)

    for sha in uninteresting:
        push(sha, True)
    for sha in interesting:
        push(sha, False)
    slop = SLOP
    while heap:
        when, _, sha = heapq.heappop(heap)
        good_queued.discard(sha)
        if sha in done:
            continue
        done.add(sha)
        if not bad[sha] and max_age is not None and -when < max_age:
            mark_bad(sha)
        is_bad = bad[sha]
        for parent in parents(sha):
            push(parent, is_bad)
        if is_bad:
            if good_queued:
                slop = SLOP
                continue
            slop -= 1
            if slop <= 0:
                break
            continue
        order.append(sha)
    commits = [sha for sha in order if not bad[sha]]
    edges = {parent for sha in commits for parent in parents(sha) if bad.get(parent)}
    return Limited(commits, sorted(edges))


def tree_closure(history: History, roots: Iterable[bytes], into: set[bytes]) -> None:
    """Add to ``into`` every tree and blob reachable from the trees ``roots``; trees already
    in ``into`` are taken to be there with everything below them."""
    stack = [root for root in roots if root not in into]
    objects = history.objects
    while stack:
        sha = stack.pop()
        if sha in into:
            continue
        into.add(sha)
        kind, raw = objects.raw(sha)
        if kind != TREE:
            continue
        for entry, mode in _new_entries(raw, into):
            if mode == _DIR:
                stack.append(entry)
            elif mode != _GITLINK:
                into.add(entry)


_ID = operator.itemgetter(2)


def _new_entries(raw: bytes, known: set[bytes]) -> list[tuple[bytes, int]]:
    """(id, mode) of the entries of tree ``raw`` whose ids are not in ``known``. Most entries
    of a tree met in a walk are known (a commit changes a few files), so the ids are compared
    all at once and only the new ones looked at."""
    items = parse_tree(raw, 20)
    ids = list(map(_ID, items))
    new = set(ids).difference(known)
    if not new:
        return []
    return [(sha, items[ids.index(sha)][1]) for sha in new]


@dataclass(slots=True)
class Listed:
    trees: list[bytes] = field(default_factory=list)
    blobs: list[bytes] = field(default_factory=list)


def list_objects(
    history: History,
    commits: Sequence[bytes],
    *,
    have: set[bytes],
    trees: Iterable[bytes] = (),
    blobs: Iterable[bytes] = (),
    object_filter: ObjectFilter | None = None,
) -> Listed:
    """The trees and blobs to send with ``commits`` (and those below the ``trees`` a request
    named, which are sent whatever the filter, as are the ``blobs`` it named), less what is in
    ``have`` (which gains everything listed). Gitlinks (submodule commits) are not followed."""
    out = Listed()
    for sha in blobs:
        if sha not in have:
            have.add(sha)
            out.blobs.append(sha)
    roots = [(tree, True) for tree in trees]
    roots += [(history.commit(sha).tree, False) for sha in commits]
    if object_filter is None or (
        object_filter.tree_depth is None and not object_filter.needs_sizes
    ):
        keep_blobs = object_filter is None or object_filter.blob_limit != 0
        for root, _named in roots:
            _walk_plain(history, root, have, out, keep_blobs)
    else:
        _walk_filtered(history, roots, have, out, object_filter)
    return out


def _walk_plain(
    history: History, root: bytes, have: set[bytes], out: Listed, keep_blobs: bool
) -> None:
    if root in have:
        return
    objects = history.objects
    stack = [root]
    have.add(root)
    out.trees.append(root)
    trees, blobs = out.trees, out.blobs
    while stack:
        sha = stack.pop()
        kind, raw = objects.raw(sha)
        if kind != TREE:
            raise ValueError(f"{sha.decode('ascii')} is not a tree")
        for entry, mode in _new_entries(raw, have):
            if mode == _DIR:
                have.add(entry)
                trees.append(entry)
                stack.append(entry)
            elif mode != _GITLINK and keep_blobs:
                have.add(entry)
                blobs.append(entry)


def _walk_filtered(
    history: History,
    roots: list[tuple[bytes, bool]],
    have: set[bytes],
    out: Listed,
    object_filter: ObjectFilter,
) -> None:
    """The walk of :func:`list_objects` with a depth or size limit: a tree met again nearer
    the root is walked again (its objects may be kept there), as git's filter does."""
    limit = object_filter.tree_depth
    depths: dict[bytes, int] = {}
    objects = history.objects
    for root, named in roots:
        stack = [(root, 0, named)]
        while stack:
            sha, depth, forced = stack.pop()
            if sha in have and sha not in depths:
                continue  # (the client's, or listed by an unlimited walk)
            seen = depths.get(sha)
            if seen is not None and seen <= depth:
                continue
            depths[sha] = depth
            keep = forced or limit is None or depth < limit
            if keep and sha not in have:
                have.add(sha)
                out.trees.append(sha)
            if not keep and limit is not None:
                continue  # everything below is deeper still
            for _name, mode, entry in history.tree(sha):
                if mode == _DIR:
                    stack.append((entry, depth + 1, False))
                elif mode != _GITLINK and entry not in have:
                    size = objects.size(entry) if object_filter.needs_sizes else 0
                    if object_filter.keeps_blob(size or 0, depth + 1):
                        have.add(entry)
                        out.blobs.append(entry)
