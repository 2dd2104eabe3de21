"""How deep trees nest: a push whose trees nest deeper than git takes (``core.maxTreeDepth``)
is refused before anything of it is kept.

git (2.45 and later) refuses to walk a tree more than :data:`MAX_TREE_DEPTH` trees deep: a
clone, a fetch or a checkout of such a history fails, and so does a push of one to a git
server. The depth of a tree is the most trees nested below it (a tree of files only: 0), found
with a stack of its own, not recursion, each tree's depth worked out once (trees share
subtrees: a history's trees are a graph, and the same subtree is met again and again).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

__all__ = ["MAX_TREE_DEPTH", "Subtrees", "too_deep"]

MAX_TREE_DEPTH = 4096
"""The most trees one may nest below another (git's ``core.maxTreeDepth`` default)."""

Subtrees = Callable[[bytes], Iterable[bytes]]
"""The ids of the trees directly in a tree, given its id."""


def too_deep(
    trees: Iterable[bytes], subtrees: Subtrees, limit: int = MAX_TREE_DEPTH
) -> bytes | None:
    """The first of ``trees`` with more than ``limit`` trees nested below it, or None. Stops
    as soon as one is found; trees below the limit are each read once."""
    depths: dict[bytes, int] = {}
    for tree in trees:
        if _depth(tree, subtrees, depths, limit) > limit:
            return tree
    return None


def _depth(root: bytes, subtrees: Subtrees, depths: dict[bytes, int], limit: int) -> int:
    """The depth of ``root``, recorded in ``depths`` with those of the trees below it (the
    depths already known); ``limit + 1`` as soon as a path below it is found longer than
    ``limit``, the walk cut off there."""
    if root in depths:
        return depths[root]
    stack: list[tuple[bytes, list[bytes], int]] = [(root, list(subtrees(root)), 0)]
    while stack:
        tree, below, done = stack[-1]
        while done < len(below) and below[done] in depths:
            done += 1
        if done < len(below):
            if len(stack) > limit:  # a tree below the limit'th: too deep, whatever it holds
                return limit + 1
            stack[-1] = (tree, below, done)
            stack.append((below[done], list(subtrees(below[done])), 0))
            continue
        stack.pop()
        depths[tree] = 1 + max((depths[sub] for sub in below), default=-1)
    return depths[root]
