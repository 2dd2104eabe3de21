"""Work a force push drops, kept on a branch of its own.

Live edits are committed before a push is answered (see ``collab.server.git_http``), so a
force push to a branch other people type in can drop what they typed a moment before, in
commits the pusher never fetched. Git allows it: a force push says "drop what is there". The
engine keeps it anyway, where it costs nobody anything: when a push rewrites a branch and the
commits it drops include commits the engine made of other people's typing (or their merges),
the old head is kept on ``<branch>-rescued-<old>``, as the live edits a rewrite does not merge
onto are (``BranchSync``'s ``Rescue``). Commits of the pusher's own typing, and commits pushed
from outside, are the pusher's to drop: they make no branch.
"""

from __future__ import annotations

from dulwich.objects import Commit, ObjectID
from dulwich.repo import Repo

from gitsync.naming import rescue_branch
from gitsync.objects.commits import author_line, create_branch, free_branch

from .branch_sync import ENGINE_AUTHOR

__all__ = ["SCAN_LIMIT", "keep_dropped_work"]

SCAN_LIMIT = 1000
"""At most this many dropped commits are looked at (newest first): the engine's commits of
live typing are the newest a push can drop."""

_CO_AUTHOR = b"co-authored-by:"


def keep_dropped_work(repo: Repo, branch: str, old: bytes, new: bytes, pusher: str) -> str | None:
    """If moving ``branch`` from ``old`` to ``new`` drops commits the engine made of the
    typing of anyone but ``pusher`` (a user name), make a branch at ``old`` and return its
    name; else ``None``."""
    if old == new or not _drops_others_work(repo, old, new, author_line(pusher).encode()):
        return None
    name = free_branch(repo, rescue_branch(branch, old))
    create_branch(repo, name, old)
    return name


def _drops_others_work(repo: Repo, old: bytes, new: bytes, pusher: bytes) -> bool:
    walker = repo.get_walker(
        include=[ObjectID(old)], exclude=[ObjectID(new)], max_entries=SCAN_LIMIT
    )
    for entry in walker:
        commit = entry.commit
        if commit.committer != ENGINE_AUTHOR.encode():
            continue
        if any(person != pusher for person in _people(commit)):
            return True
    return False


def _people(commit: Commit) -> list[bytes]:
    """The author of ``commit`` and its ``Co-authored-by:`` trailers."""
    people = [commit.author]
    for line in commit.message.splitlines():
        if line[: len(_CO_AUTHOR)].lower() == _CO_AUTHOR:
            people.append(line[len(_CO_AUTHOR) :].strip())
    return people
