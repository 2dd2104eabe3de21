"""``branch.files``: the paths of a branch's files, for editors that show a file tree.

=============  ====================  ==============================================
operation      arguments             value
=============  ====================  ==============================================
branch.files   repo, branch?         the branch, its head, and its files' paths
                                     (sorted; at most ``MAX_FILES``)
=============  ====================  ==============================================
"""

from __future__ import annotations

import stat
from typing import Any

from dulwich.objects import S_ISGITLINK, Tree
from dulwich.repo import Repo

from gitsync import RepoNotFound
from gitsync.changes import shown_path
from protocol.errors import ErrorCode, ProtocolError
from protocol.names import validate_branch

from ..server.ops import CallContext, Operations, arg_opt_str, arg_str
from .branches import Branches
from .work import in_repo

__all__ = ["MAX_FILES", "register_tree_ops", "tree_paths"]

MAX_FILES = 20_000
"""The most paths one ``branch.files`` returns (``truncated`` says when there were more)."""


def register_tree_ops(ops: Operations, branches: Branches) -> None:
    """Add ``branch.files`` to ``ops``."""

    async def files(ctx: CallContext, args: dict[str, Any]) -> Any:
        repo = branches.check_read(ctx.identity, arg_str(args, "repo"))
        name = arg_opt_str(args, "branch")
        try:
            branch = validate_branch(name or await branches.default_branch(repo))
        except RepoNotFound:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no repository {repo!r}") from None
        head = await branches.head(repo, branch)
        paths, truncated = await in_repo(branches.repos, repo, tree_paths, head)
        return {
            "repo": repo,
            "branch": branch,
            "head": head.decode(),
            "files": paths,
            "truncated": truncated,
        }

    ops.register("branch.files", files, ("repo", "branch"))


def tree_paths(repo: Repo, head: bytes) -> tuple[list[str], bool]:
    """The paths of the regular files (and symlinks) in ``head``'s tree, sorted; each byte of
    a name that is not UTF-8 written ``\\xNN`` (``shown_path``), as merges show them."""
    paths: list[str] = []
    stack: list[tuple[str, bytes]] = [("", repo[head].tree)]  # type: ignore[attr-defined]
    while stack:
        prefix, tree_id = stack.pop()
        tree = repo[tree_id]
        if not isinstance(tree, Tree):
            continue
        for entry in tree.iteritems():
            path = prefix + shown_path(entry.path.decode("utf-8", "surrogateescape"))
            if stat.S_ISDIR(entry.mode):
                stack.append((path + "/", entry.sha))
            elif not S_ISGITLINK(entry.mode):  # submodules have no file here
                paths.append(path)
                if len(paths) > MAX_FILES:
                    return sorted(paths[:MAX_FILES]), True
    return sorted(paths), False
