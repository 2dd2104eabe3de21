"""What changed between two commits, file by file, with the contents on both sides."""

from __future__ import annotations

import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from dulwich.diff_tree import tree_changes
from dulwich.errors import NotTreeError
from dulwich.object_store import tree_lookup_path
from dulwich.objects import Blob, Commit, ObjectID, SubmoduleEncountered
from dulwich.repo import Repo

__all__ = [
    "FileChange",
    "blocked_at",
    "changed_files",
    "git_path",
    "is_text",
    "not_text_at",
    "read_blob",
    "shown_path",
    "unchanged_at",
]


def git_path(path: str) -> bytes:
    """The bytes git holds for ``path``. A path read from a tree is decoded from UTF-8 with
    ``surrogateescape``: a name that is not UTF-8 (git takes any bytes) comes back as it was.
    Such a path is never a live document's (a document id is valid Unicode)."""
    return path.encode("utf-8", "surrogateescape")


def shown_path(path: str) -> str:
    """``path`` as valid Unicode, for messages and replies: each byte of a name that is not
    UTF-8 is written ``\\xNN`` (``caf\\xe9.bin``)."""
    return git_path(path).decode("utf-8", "backslashreplace")


@dataclass(frozen=True, slots=True)
class FileChange:
    """``path`` went from ``old`` to ``new`` (``None``: absent, or not a regular file).
    ``path`` is decoded as :func:`git_path` says: it may name a file that is not UTF-8."""

    path: str
    old: bytes | None
    new: bytes | None


def is_text(data: bytes | None) -> bool:
    """UTF-8 without NUL bytes: what the engine edits live."""
    if data is None:
        return True
    if b"\x00" in data[:8000]:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _tree(repo: Repo, commit: bytes | None) -> ObjectID | None:
    if commit is None:
        return None
    obj = repo[ObjectID(commit)]
    if not isinstance(obj, Commit):
        raise ValueError(f"{commit!r} is not a commit")
    return ObjectID(obj.tree)


def _blob(repo: Repo, mode: int | None, sha: bytes | None) -> bytes | None:
    if sha is None or mode is None or not stat.S_ISREG(mode):
        return None
    obj = repo[ObjectID(sha)]
    return obj.as_raw_string() if isinstance(obj, Blob) else None


def changed_files(repo: Repo, old: bytes | None, new: bytes | None) -> list[FileChange]:
    """Every file whose content differs between commits ``old`` and ``new``; only the trees
    that differ are read."""
    changes = []
    for change in tree_changes(repo.object_store, _tree(repo, old), _tree(repo, new)):
        old_entry, new_entry = change.old, change.new
        entry = new_entry if new_entry is not None and new_entry.path else old_entry
        path = (entry.path if entry is not None else None) or b""
        before = _blob(repo, old_entry.mode, old_entry.sha) if old_entry else None
        after = _blob(repo, new_entry.mode, new_entry.sha) if new_entry else None
        if before != after:
            changes.append(FileChange(path.decode("utf-8", "surrogateescape"), before, after))
    return changes


def read_blob(repo: Repo, commit: bytes, path: str) -> bytes | None:
    """The content of ``path`` at ``commit``; ``None`` if absent or not a regular file."""
    tree = _tree(repo, commit)
    assert tree is not None
    try:
        mode, sha = tree_lookup_path(repo.object_store.__getitem__, tree, git_path(path))
    except (KeyError, NotTreeError, SubmoduleEncountered):  # absent, or below a file
        return None
    return _blob(repo, mode, sha)


def unchanged_at(repo: Repo, commit: bytes | None, files: Mapping[str, bytes]) -> set[str]:
    """Those of ``files`` (path -> content) that ``commit`` holds as they are: a regular
    file with that content, or, for no content, no file (a document opened on a path the
    branch lacks, and not typed in). Compared by blob id: no blob is read."""
    tree = _tree(repo, commit)
    if tree is None:
        return set()
    same = set()
    for path, data in files.items():
        try:
            mode, sha = tree_lookup_path(repo.object_store.__getitem__, tree, git_path(path))
        except KeyError:  # absent
            if not data:
                same.add(path)
            continue
        except (NotTreeError, SubmoduleEncountered):  # below a file
            continue
        if stat.S_ISREG(mode) and sha == Blob.from_string(data).id:
            same.add(path)
    return same


def _entry_at(repo: Repo, tree: ObjectID, path: str) -> tuple[int, bytes] | None:
    """The mode and id of ``path``'s entry in ``tree``; None if nothing is there. Raises
    ``NotTreeError`` for a path below a file or a link, ``SubmoduleEncountered`` below a
    submodule."""
    try:
        mode, sha = tree_lookup_path(repo.object_store.__getitem__, tree, git_path(path))
    except KeyError:
        return None
    return mode, sha


def blocked_at(repo: Repo, commit: bytes | None, paths: Iterable[str]) -> set[str]:
    """Those of ``paths`` that ``commit``'s tree has no place for as a file: a directory, a
    symbolic link or a submodule is there, or a file, a link or a submodule where one of
    its directories would be. Text written at such a path would have to replace what is
    there (see ``commit_changes``, ``text_only``)."""
    tree = _tree(repo, commit)
    if tree is None:
        return set()
    return {path for path in paths if _file_place(repo, tree, path) is _NO_PLACE}


def not_text_at(repo: Repo, commit: bytes, paths: list[str]) -> set[str]:
    """Those of ``paths`` whose place in ``commit``'s tree holds neither a text file nor
    nothing: what :func:`blocked_at` finds, and a binary or non-UTF-8 file. A live document
    of such a path has no file left to edit."""
    tree = _tree(repo, commit)
    assert tree is not None
    found = set()
    for path in paths:
        entry = _file_place(repo, tree, path)
        if entry is None:
            continue  # nothing there: the file was deleted
        if entry is _NO_PLACE or not is_text(_blob(repo, *entry)):
            found.add(path)
    return found


_NO_PLACE = (0, b"")
"""What :func:`_file_place` answers for a path the tree has no place for as a file."""


def _file_place(repo: Repo, tree: ObjectID, path: str) -> tuple[int, bytes] | None:
    """The regular file at ``path`` in ``tree`` (its mode and blob id); ``None`` if nothing
    is there; :data:`_NO_PLACE` if a directory, a link or a submodule is there, or above."""
    try:
        entry = _entry_at(repo, tree, path)
    except (NotTreeError, SubmoduleEncountered):
        return _NO_PLACE
    if entry is not None and not stat.S_ISREG(entry[0]):
        return _NO_PLACE
    return entry
