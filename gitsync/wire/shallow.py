"""Shallow fetches: where a shallow clone's history is cut, and what a fetch changes of it.

A client with a shallow history names its boundary commits (``shallow <id>``: it has them but
not their parents). A fetch may ask to cut the history it gets:

- ``deepen <n>``: at ``n`` commits from each want (``--depth``); with ``deepen-relative``,
  ``n`` commits deeper than the client's boundary nearest a want (``--deepen``);
- ``deepen-since <time>``: at the first commits older than ``time`` (``--shallow-since``);
- ``deepen-not <ref>``: at the commits that ref reaches (``--shallow-exclude``); with
  ``deepen-since`` too, at whichever comes first.

The answer (:class:`ShallowInfo`) lists the new boundary commits (``shallow``) and those of
the client's that are no longer boundaries (``unshallow``: their parents are sent now). This
is what git's ``upload-pack`` computes (``shallow.c``), on this server's complete history.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass, field

from .object_walk import History, limit_commits

__all__ = ["INFINITE_DEPTH", "ShallowError", "ShallowInfo", "ShallowRequest", "shallow_info"]

INFINITE_DEPTH = 0x7FFFFFFF
"""The depth ``git fetch --unshallow`` asks for."""


class ShallowError(ValueError):
    """A shallow request that cannot be answered; the message is for the client."""


@dataclass(frozen=True, slots=True)
class ShallowRequest:
    client_shallow: tuple[bytes, ...] = ()
    depth: int = 0
    relative: bool = False
    since: int | None = None
    not_commits: tuple[bytes, ...] = ()

    @property
    def deepens(self) -> bool:
        return self.depth > 0 or self.since is not None or bool(self.not_commits)


@dataclass(frozen=True, slots=True)
class ShallowInfo:
    """``shallow``: new boundary commits, to send as ``shallow`` lines; ``unshallow``: the
    client's boundaries that are boundaries no more. ``grafts``: every commit the pack's walk
    takes to have no parents."""

    shallow: list[bytes] = field(default_factory=list)
    unshallow: list[bytes] = field(default_factory=list)
    grafts: frozenset[bytes] = frozenset()


def shallow_info(
    history: History,
    wants: Sequence[bytes],
    request: ShallowRequest,
    tips: Sequence[bytes] = (),
) -> ShallowInfo:
    """The shallow boundaries of a fetch of the commits ``wants`` (tags peeled); ``tips``:
    the commits the served refs name (a relative deepening starts from the client's
    boundaries they reach; the wants if none are given)."""
    client = [sha for sha in dict.fromkeys(request.client_shallow) if _is_commit(history, sha)]
    if request.depth > 0 and (request.since is not None or request.not_commits):
        raise ShallowError("deepen and deepen-since (or deepen-not) cannot be used together")
    if request.depth >= INFINITE_DEPTH:
        return ShallowInfo([], client, frozenset(client))
    if request.depth > 0 and request.relative:
        boundary, inside = _by_relative_depth(history, tips or wants, client, request.depth)
    elif request.depth > 0:
        boundary, inside = _by_depth(history, wants, request.depth)
    elif request.since is not None or request.not_commits:
        boundary, inside = _by_rev_list(history, wants, request)
    else:
        return ShallowInfo([], [], frozenset(client))
    known = set(client)
    shallow = [sha for sha in boundary if sha not in known and sha not in inside]
    unshallow = [sha for sha in client if sha in inside]
    return ShallowInfo(shallow, unshallow, frozenset(shallow) | known)


def _is_commit(history: History, sha: bytes) -> bool:
    try:
        history.commit(sha)
    except ValueError:
        return False  # (a commit the server does not have: git ignores it too)
    return True


def _by_depth(
    history: History, heads: Sequence[bytes], depth: int
) -> tuple[list[bytes], set[bytes]]:
    """(boundary, commits inside it) of a cut at ``depth`` commits from ``heads`` (a head is
    at depth 1): the boundary is the commits whose least depth is ``depth``."""
    boundary: list[bytes] = []
    inside: set[bytes] = set()
    level = dict.fromkeys(heads, 1)
    queue = collections.deque(level)
    while queue:
        sha = queue.popleft()
        at = level[sha]
        if at >= depth:
            boundary.append(sha)
            continue
        inside.add(sha)
        for parent in history.commit(sha).parents:
            if parent not in level:
                level[parent] = at + 1
                queue.append(parent)
    return boundary, inside


def _by_relative_depth(
    history: History, tips: Sequence[bytes], client: list[bytes], depth: int
) -> tuple[list[bytes], set[bytes]]:
    """(boundary, commits inside it) of ``--deepen=<depth>``: ``depth`` commits deeper than
    each of the client's boundaries that the served refs reach, as git's upload-pack cuts
    it (from the boundaries, not from the wants)."""
    reached = _reached(history, tips)
    heads = [sha for sha in client if sha in reached]
    if not heads:
        return [], set()
    return _by_depth(history, heads, depth + 1)


def _reached(history: History, tips: Sequence[bytes]) -> set[bytes]:
    """The commits ``tips`` reach."""
    seen = set(tips)
    stack = list(seen)
    while stack:
        for parent in history.commit(stack.pop()).parents:
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return seen


def _by_rev_list(
    history: History, wants: Sequence[bytes], request: ShallowRequest
) -> tuple[list[bytes], set[bytes]]:
    """(boundary, commits inside it) of a cut by time and/or by the commits that refs reach.

    As ``rev-list --max-age=<since> [--not <refs> --not] <wants>`` lists them: with refs to
    leave out the walk is limited, and a commit older than ``since`` makes everything behind
    it left out; without, the walk only does not go on past such a commit, and a commit it
    also reaches through younger ones is listed."""
    if request.not_commits:
        listed = limit_commits(history, wants, request.not_commits, max_age=request.since).commits
    else:
        assert request.since is not None
        listed = _younger(history, wants, request.since)
    if not listed:
        raise ShallowError("no commits selected for shallow requests")
    kept = set(listed)
    boundary = [sha for sha in listed if any(p not in kept for p in history.commit(sha).parents)]
    return boundary, kept - set(boundary)


def _younger(history: History, wants: Sequence[bytes], since: int) -> list[bytes]:
    """The commits the wants reach through commits no older than ``since``, themselves no
    older than it."""
    listed: list[bytes] = []
    seen = set(wants)
    stack = list(dict.fromkeys(wants))
    while stack:
        sha = stack.pop()
        commit = history.commit(sha)
        if commit.time < since:
            continue
        listed.append(sha)
        for parent in commit.parents:
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return listed
