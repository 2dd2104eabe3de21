"""Reading and writing the files of a working tree: atomic writes that keep the mode and
never clobber a save that raced them, and which files belong to the tree at all.

A write goes to a temporary file beside the target, then, just before the rename, the target
is read again: if its content hash is no longer the one the write was computed from (an editor
saved meanwhile), the write is dropped and :class:`Raced` raised, so that the caller merges
the new save instead of overwriting it. The rename itself swaps the two files (see
:mod:`~collab.disk.renames`), so a save that lands between that check and the rename is found
in the file swapped out, and swapped back. The file it replaced can be kept open, for a program
that was still writing it (see :mod:`~collab.disk.replaced`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import time
from collections.abc import Iterable
from pathlib import Path

from dulwich.ignore import IgnoreFilterManager
from dulwich.repo import Repo

from .renames import exchange, rename_new
from .replaced import Replaced
from .state import digest

__all__ = [
    "TEMP_MARK",
    "PathFilter",
    "Raced",
    "Stamp",
    "read_bytes",
    "read_whole",
    "remove_file",
    "stamp_of",
    "write_atomically",
]

log = logging.getLogger("collab.disk")

TEMP_MARK = ".collab-tmp-"
"""Part of the name of this syncer's temporary files (ignored by the watcher)."""

_EDITOR_SCRATCH = ("___jb_tmp___", "___jb_old___", "~", ".swp", ".swx", ".swpx")
"""Name endings of editors' scratch files (JetBrains, Emacs, vim), which are not synced."""


class Raced(Exception):
    """The file changed between reading it and replacing it; nothing was written."""


def read_bytes(path: Path) -> bytes | None:
    """The file's content; ``None`` if it is absent or not a regular file."""
    try:
        with open(path, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                return None
            return handle.read()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None


Stamp = tuple[int, int, int]
"""A file's inode, size and modification time: what a save changes."""


def stamp_of(path: Path) -> Stamp | None:
    """``path``'s :data:`Stamp`; ``None`` if it is absent."""
    try:
        status = os.stat(path, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return status.st_ino, status.st_size, status.st_mtime_ns


def read_whole(path: Path) -> tuple[bytes | None, Stamp | None] | None:
    """``path``'s content (as :func:`read_bytes`) and its stamp, or ``None`` if it changed
    while it was read (a save under way)."""
    before = stamp_of(path)
    data = read_bytes(path)
    after = stamp_of(path)
    return None if before != after else (data, after)


def _current_digest(path: Path) -> str | None:
    data = read_bytes(path)
    return None if data is None else digest(data)


def _open_current(path: Path) -> Replaced | None:
    """The file at ``path``, open, read, and its size and modification time as read."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 (kept open by the caller)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    try:
        status = os.fstat(handle.fileno())
        if stat.S_ISREG(status.st_mode):
            stamp = (status.st_size, status.st_mtime_ns)
            return Replaced(handle, handle.read(), stamp)
    except BaseException:
        handle.close()
        raise
    handle.close()
    return None


def write_atomically(
    path: Path, data: bytes, expected: str | None, *, keep: bool = False
) -> Replaced | None:
    """Replace ``path`` with ``data`` through a temporary file and a rename, keeping its mode.

    ``expected`` is the hash of the content the caller read (``None``: the file was absent);
    if the file holds something else just before the rename, raise :class:`Raced`. With
    ``keep``, return the replaced file, still open (the caller closes it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    temp = path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}")
    current: Replaced | None = None
    try:
        with open(temp, "wb") as handle:
            handle.write(data)
            os.fchmod(handle.fileno(), mode)
        current = _open_current(path)
        if (None if current is None else digest(current.data)) != expected:
            raise Raced(str(path))
        _swap_in(temp, path, current)
    except BaseException:
        if current is not None:
            current.close()
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
    if current is not None and not keep:
        current.close()
        return None
    return current


def _swap_in(temp: Path, path: Path, current: Replaced | None) -> None:
    """Put ``temp`` at ``path``, which held ``current`` (open and read; ``None``: absent)
    when it was checked. A save that landed after the check (a new file renamed there, a
    write in place) is not overwritten: it is put back, and :class:`Raced` raised.

    Without the swapping renames of :mod:`.renames`, a plain rename: a save in the moment
    between the check and the rename is then lost."""
    if current is None:
        try:
            if rename_new(temp, path):
                return
        except FileExistsError:
            raise Raced(str(path)) from None
        os.replace(temp, path)
        return
    ours = os.stat(temp)
    try:
        swapped = exchange(temp, path)
    except FileNotFoundError:  # deleted since the check
        raise Raced(str(path)) from None
    if not swapped:
        os.replace(temp, path)
        return
    # ``temp`` now names the file that was at ``path``: the one checked, unchanged, or a save
    checked = os.fstat(current.handle.fileno())
    out = os.stat(temp, follow_symlinks=False)
    if _same(out, checked) and current.read() == current.data:
        return
    _put_back(temp, path, ours)
    raise Raced(str(path))


def _same(one: os.stat_result, other: os.stat_result) -> bool:
    return (one.st_dev, one.st_ino) == (other.st_dev, other.st_ino)


def _put_back(temp: Path, path: Path, placed: os.stat_result, tries: int = 16) -> None:
    """Undo a swap that put the file ``placed`` at ``path`` in the place of a save, now at
    ``temp``: swap them back, and again while yet newer saves land in between, so that the
    newest save ends at ``path`` (what ends at ``temp`` is the caller's to remove)."""
    for _ in range(tries):
        saved = os.stat(temp, follow_symlinks=False)
        exchange(temp, path)
        if _same(os.stat(temp, follow_symlinks=False), placed):
            return  # nothing replaced the file between the two swaps
        placed = saved  # a newer save replaced it: it goes back to ``path`` next
    kept = path.with_name(f".{path.name}.collab-kept-{time.time_ns()}")
    os.replace(temp, kept)
    log.warning("%s: saves kept landing while a write was undone; one is kept as %s", path, kept)


def remove_file(path: Path, expected: str | None) -> None:
    """Delete ``path`` if it still holds content of hash ``expected`` (else :class:`Raced`),
    and the directories it leaves empty."""
    if _current_digest(path) != expected:
        raise Raced(str(path))
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    parent = path.parent
    with contextlib.suppress(OSError):
        while True:
            parent.rmdir()  # fails once a directory is not empty (or is the root's parent)
            parent = parent.parent


_UMASK: int | None = None


def _umask() -> int:
    global _UMASK
    if _UMASK is None:
        _UMASK = os.umask(0o022)
        os.umask(_UMASK)
    return _UMASK


class PathFilter:
    """Which files of the tree are synced: not ``.git/``, not this syncer's temporary files,
    nor the files of another repository inside the tree (a folder with a ``.git`` of its own:
    git itself would not take its files either); and of the files the branch does not have
    (see :meth:`track`), not what ``.gitignore`` ignores nor editors' scratch files. A file
    the branch has is synced whatever a ``.gitignore`` says, as git tracks it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._repo = Repo(str(root))
        self._ignore = IgnoreFilterManager.from_repo(self._repo)
        self._tracked: frozenset[str] = frozenset()
        self._tracked_dirs: frozenset[str] = frozenset()

    def track(self, paths: Iterable[str]) -> None:
        """``paths`` are the files the branch has (at the head last fetched)."""
        tracked = frozenset(paths)
        if tracked == self._tracked:
            return
        dirs: set[str] = set()
        for path in tracked:
            folder = path.rpartition("/")[0]
            while folder and folder not in dirs:
                dirs.add(folder)
                folder = folder.rpartition("/")[0]
        self._tracked, self._tracked_dirs = tracked, frozenset(dirs)

    def close(self) -> None:
        self._repo.close()

    def reload(self) -> None:
        """Read the ``.gitignore`` files again (one of them changed)."""
        self._ignore = IgnoreFilterManager.from_repo(self._repo)

    def relative(self, path: str | Path) -> str | None:
        """``path`` as a tree path (``a/b.py``) if it is synced, else ``None``."""
        full = Path(path)
        try:  # its folder resolved, not itself: a symbolic link is a file of its own
            rel = (full.parent.resolve(strict=False) / full.name).relative_to(self.root)
        except ValueError:
            return None
        text = rel.as_posix()
        return text if self.wanted(text) else None

    def wanted(self, rel: str, *, looked_above: bool = False, tracked: bool = False) -> bool:
        """Whether the tree path ``rel`` is synced (``looked_above``: its folders are known
        to hold no other repository, as :meth:`walk` knows; ``tracked``: the branch had it,
        if it does not now)."""
        parts = rel.split("/")
        if not rel or rel == "." or ".git" in parts:
            return False
        name = parts[-1]
        if TEMP_MARK in name:
            return False
        tracked = tracked or rel in self._tracked
        if not tracked and _scratch(name):
            return False
        if not looked_above and any(
            os.path.lexists(os.path.join(self.root, *parts[:depth], ".git"))
            for depth in range(1, len(parts))
        ):
            return False  # in another repository
        return tracked or not self._ignore.is_ignored(rel)

    def walk(self) -> list[str]:
        """Every synced regular file under the root, as tree paths."""
        found: list[str] = []
        for folder, dirs, files in os.walk(self.root):
            rel_dir = Path(folder).relative_to(self.root).as_posix()
            prefix = "" if rel_dir == "." else rel_dir + "/"
            if prefix and (".git" in dirs or ".git" in files):  # another repository: none of it
                dirs[:] = []
                continue
            dirs[:] = [d for d in dirs if d != ".git" and self._dir_wanted(prefix + d)]
            for name in files:
                rel = prefix + name
                if self.wanted(rel, looked_above=True) and os.path.isfile(
                    os.path.join(folder, name)
                ):
                    found.append(rel)
        return sorted(found)

    def _dir_wanted(self, rel: str) -> bool:
        return rel in self._tracked_dirs or not self._ignore.is_ignored(rel + "/")


def _scratch(name: str) -> bool:
    """Whether ``name`` is one an editor gives its scratch files."""
    if name.endswith(_EDITOR_SCRATCH) or name == "4913":
        return True  # 4913: the file vim writes to probe a directory
    # Emacs: a lock, and an auto-save file (a copy of the buffer)
    return name.startswith(".#") or (len(name) > 1 and name[0] == name[-1] == "#")
