"""Finding repositories under a root directory and reading files at a branch head."""

from __future__ import annotations

import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dulwich.object_store
from dulwich.object_store import tree_lookup_path
from dulwich.objects import Blob, Commit, ObjectID, Tree
from dulwich.pack import Pack
from dulwich.refs import Ref
from dulwich.repo import Repo

__all__ = [
    "BlobNotText",
    "BranchNotFound",
    "FileBlob",
    "RepoNotFound",
    "Repositories",
    "create_demo_repo",
]


class RepoNotFound(LookupError):
    pass


class BranchNotFound(LookupError):
    pass


class BlobNotText(ValueError):
    """The path names something that is not an editable text file."""


@dataclass(frozen=True, slots=True)
class FileBlob:
    """A file's content at a branch head; ``sha`` is ``None`` when the file does not exist."""

    sha: bytes | None
    text: str


class Repositories:
    """The git repositories under ``root``: ``root/<name>`` or ``root/<name>.git``.

    Names must already be validated (``protocol.names``); this class only resolves them.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._open: dict[str, Repo] = {}
        self._lock = threading.Lock()
        self.executor = ThreadPoolExecutor(thread_name_prefix="git")
        """Where callers run work on these repositories; :meth:`close` waits for it."""

    def path_of(self, name: str) -> Path:
        for candidate in (self.root / name, self.root / f"{name}.git"):
            if (candidate / ".git").exists() or (candidate / "HEAD").is_file():
                return candidate
        raise RepoNotFound(name)

    def open(self, name: str) -> Repo:
        with self._lock:
            repo = self._open.get(name)
            if repo is None:
                repo = Repo(str(self.path_of(name)))
                _serialise_pack_scans(repo.object_store)
                self._open[name] = repo
            return repo

    def close(self) -> None:
        """Wait for the work running in :attr:`executor`, then close every repository (work
        still running on a closed repository would open its files again)."""
        self.executor.shutdown(wait=True)
        with self._lock:
            for repo in self._open.values():
                repo.close()
            self._open.clear()

    def has_work_tree(self, name: str) -> bool:
        """Whether repository ``name`` is not bare: the engine never updates a work tree, so
        one only ever falls behind the branch it has checked out."""
        return (self.path_of(name) / ".git").exists()

    def names(self) -> list[str]:
        found = []
        for child in sorted(self.root.iterdir()) if self.root.is_dir() else []:
            name = child.name.removesuffix(".git")
            try:
                self.path_of(name)
            except RepoNotFound:
                continue
            found.append(name)
        return found

    def branch_head(self, name: str, branch: str) -> bytes:
        repo = self.open(name)
        ref = Ref(b"refs/heads/" + branch.encode())
        try:
            return bytes(repo.refs[ref])
        except KeyError:
            raise BranchNotFound(f"{name}/{branch}") from None

    def read_file(self, name: str, branch: str, path: str) -> FileBlob:
        """Read ``path`` at the head of ``branch``; a missing file reads as empty."""
        repo = self.open(name)
        commit = repo[self.branch_head(name, branch)]
        assert isinstance(commit, Commit)
        try:
            mode, sha = tree_lookup_path(repo.object_store.__getitem__, commit.tree, path.encode())
        except KeyError:
            return FileBlob(None, "")
        if not stat.S_ISREG(mode):
            raise BlobNotText(f"{path} is not a regular file")
        blob = repo[sha]
        assert isinstance(blob, Blob)
        data = blob.as_raw_string()
        if b"\x00" in data[:8000]:
            raise BlobNotText(f"{path} is a binary file")
        try:
            return FileBlob(sha, data.decode("utf-8"))
        except UnicodeDecodeError:
            raise BlobNotText(f"{path} is not UTF-8 text") from None


def create_demo_repo(path: Path, files: dict[str, str] | None = None) -> Path:
    """Create a bare repository at ``path`` whose ``main`` holds ``files`` (a demo set if
    None). Bare, as every repository the engine creates: the engine commits to the object
    store and moves refs, so a work tree would only ever fall behind (``git status`` there
    would show every commit of the checked-out branch undone)."""
    files = files if files is not None else _DEMO_FILES
    path.mkdir(parents=True, exist_ok=True)
    repo = Repo.init_bare(str(path))
    try:
        store = repo.object_store
        root = _build_tree(store, files)
        commit = Commit()
        commit.tree = root
        commit.author = commit.committer = b"collab <collab@localhost>"
        commit.author_time = commit.commit_time = int(time.time())
        commit.author_timezone = commit.commit_timezone = 0
        commit.encoding = b"UTF-8"
        commit.message = b"Initial commit\n"
        store.add_object(commit)
        repo.refs.set_if_equals(Ref(b"refs/heads/main"), None, commit.id)
        repo.refs.set_symbolic_ref(Ref(b"HEAD"), Ref(b"refs/heads/main"))
    finally:
        repo.close()
    return path


def _build_tree(store: object, files: dict[str, str]) -> bytes:
    nested: dict[str, object] = {}
    for file_path, text in files.items():
        node = nested
        *dirs, leaf = file_path.split("/")
        for part in dirs:
            node = node.setdefault(part, {})  # type: ignore[assignment]
        node[leaf] = text

    def write(node: dict[str, object]) -> bytes:
        tree = Tree()
        for name, value in node.items():
            if isinstance(value, dict):
                tree.add(name.encode(), stat.S_IFDIR, ObjectID(write(value)))
            else:
                blob = Blob.from_string(str(value).encode("utf-8"))
                store.add_object(blob)  # type: ignore[attr-defined]
                tree.add(name.encode(), stat.S_IFREG | 0o644, blob.id)
        store.add_object(tree)  # type: ignore[attr-defined]
        return bytes(tree.id)

    return write(nested)


_DEMO_FILES = {
    "README.md": "# Demo\n\nOpen this file from two editors and type in both.\n",
    "src/hello.py": 'def hello(name: str) -> str:\n    return f"Hello, {name}!"\n',
}


def _serialise_pack_scans(store: Any) -> None:
    """Make a shared object store's pack-directory rescans take turns, and its pack lookups
    look again after a miss.

    dulwich rescans the pack directory from whichever thread misses an object, and two threads
    rescanning at once can each open the same new pack and keep only one (the other is never
    closed). A lookup that misses and whose rescan finds no new pack gives up, even when
    another thread's rescan has just added the pack that has the object. With a pack per
    commit, new packs are frequent, and the server's threads share one store per repository.
    (Relies on dulwich's ``_update_pack_cache`` and ``_lookup_in_packs``; dulwich is pinned.)
    """
    update = store._update_pack_cache
    lookup = store._lookup_in_packs
    lock = threading.Lock()

    def rescan() -> Any:
        with lock:
            return update()

    def lookup_again(find: Any) -> Any:
        try:
            return lookup(find)
        except KeyError:
            return lookup(find)  # the packs other threads' rescans have added meanwhile

    store._update_pack_cache = rescan
    store._lookup_in_packs = lookup_again


class _Pack(Pack):
    """dulwich's ``Pack`` whose index and data are opened by one thread only.

    A pack opens its index and data on first use; two threads using a new pack at once can
    each open them and keep one, leaving the other open until collected. The stores dulwich
    creates use this class (set below; dulwich is pinned). The lock is reentrant: opening
    the data checks it against the index, which opens the index in the same thread.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._opening = threading.RLock()

    def _opened(self, current: Any, open_it: Any) -> Any:
        """``current`` once open; else what dulwich's getter ``open_it`` opens, under the lock
        (the getter opens only what is still unopened when it gets the lock)."""
        if current is not None:
            return current
        with self._opening:
            return open_it(self)

    @property
    def index(self) -> Any:
        return self._opened(self._idx, _PACK_INDEX)

    @property
    def data(self) -> Any:
        return self._opened(self._data, _PACK_DATA)


_PACK_INDEX = Pack.__dict__["index"].fget
_PACK_DATA = Pack.__dict__["data"].fget
setattr(dulwich.object_store, "Pack", _Pack)  # noqa: B010 - replaces the class dulwich opens packs with
