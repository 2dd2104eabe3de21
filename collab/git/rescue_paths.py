"""Where live text kept on a branch of its own is committed.

Live text that its branch cannot take (a move made its path no text file, a rewrite it does
not merge onto, a branch deleted under it) is committed on a branch made for it from a
commit of its branch: each text at its own path where that commit has a place for a file
there. Where it has none (a file, a link or a submodule where one of the path's directories
would be, a directory where the file would be), or another of the texts is written where a
directory of the path would be, the text is committed at the top of the tree instead, under
its path with its slashes made dashes and ``.rescued`` added (``notes/todo.md`` as
``notes-todo.md.rescued``), a name no entry of the tree and no other text has. A text git's
fsck refuses at its path (a ``.gitmodules`` that does not parse) gets ``.rescued`` added
where it is.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping

from dulwich.objects import Commit, ObjectID, Tree
from dulwich.repo import Repo

from gitsync.changes import blocked_at, git_path
from gitsync.objects.fsck import file_problem
from protocol.names import MAX_PATH_COMPONENT

__all__ = ["SUFFIX", "rescue_paths"]

SUFFIX = ".rescued"


def rescue_paths(repo: Repo, commit: bytes | None, texts: Mapping[str, bytes]) -> dict[str, str]:
    """Each of ``texts`` (path -> content) mapped to the path it is committed as on a branch
    made from ``commit`` (None: a branch of these texts alone), as the module says."""
    top = _top_names(repo, commit)
    placed: set[str] = set()
    kept: dict[str, str] = {}
    for path in sorted(texts):  # (a directory sorts before the paths below it)
        at = path if file_problem(path, texts[path]) is None else path + SUFFIX
        if (
            at in placed
            or any(at.startswith(other + "/") or other.startswith(at + "/") for other in placed)
            or blocked_at(repo, commit, [at])
        ):
            at = _free_top_name(path, top | {other.split("/")[0] for other in placed})
        placed.add(at)
        kept[path] = at
    return kept


def _top_names(repo: Repo, commit: bytes | None) -> set[str]:
    """The names of the entries at the top of ``commit``'s tree."""
    if commit is None:
        return set()
    obj = repo[ObjectID(commit)]
    assert isinstance(obj, Commit)
    tree = repo[obj.tree]
    assert isinstance(tree, Tree)
    return {bytes(entry.path).decode("utf-8", "surrogateescape") for entry in tree.items()}


def _free_top_name(path: str, taken: Collection[str]) -> str:
    """``path`` as one name at the top of a tree, none of ``taken``: its slashes made
    dashes, ``.rescued`` added (before it ``-2``, ``-3``... if taken). A name over the
    length a path component may have keeps its end, after a digest of the whole path."""
    flat = path.replace("/", "-")
    room = MAX_PATH_COMPONENT - len(SUFFIX) - len("-999")
    if len(git_path(flat)) > room:
        digest = hashlib.sha1(git_path(path)).hexdigest()[:12]
        end = git_path(flat)[-(room - len(digest) - 1) :]
        flat = f"{digest}-{end.decode('utf-8', 'ignore')}"
    candidate, n = flat + SUFFIX, 1
    while candidate in taken:
        n += 1
        candidate = f"{flat}-{n}{SUFFIX}"
    return candidate
