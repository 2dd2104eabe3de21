"""Finding repositories under a root directory and reading files at a branch head.

dulwich's object store is not thread-safe while packs are added: its pack cache is rescanned
by whichever thread misses an object, and packs open their files on first use. So no store is
shared between threads: :meth:`Repositories.open` gives each thread a ``Repo`` of its own for
each repository, as separate processes would have. A store that misses an object rescans the
pack directory (dulwich does, and drops the packs that a combination removed), so it sees the
packs other threads' commits have added. Refs are files moved by compare-and-swap under lock
files, shared by every instance as they are by every git process.
"""

from __future__ import annotations

import stat
import threading
import time
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from dulwich.config import ConfigFile
from dulwich.errors import NotTreeError
from dulwich.object_store import tree_lookup_path
from dulwich.objects import Blob, Commit, ObjectID, SubmoduleEncountered, Tree, valid_hexsha
from dulwich.refs import Ref
from dulwich.repo import Repo

from .objects.commits import local_offset

__all__ = [
    "BlobNotText",
    "BranchDamaged",
    "BranchNotFound",
    "FileBlob",
    "RepoNotFound",
    "Repositories",
    "create_demo_repo",
    "is_stored",
]


class RepoNotFound(LookupError):
    pass


_NO_REPOSITORY = "no git repository (DIR/NAME with a .git, or a bare DIR/NAME.git)"


def _config_of(path: Path) -> Path:
    return path / ".git" / "config" if (path / ".git").is_dir() else path / "config"


def unsupported(path: Path) -> str | None:
    """Why the repository at ``path`` cannot be served, if it cannot: its objects are named
    by another hash than SHA-1 (``git init --object-format=sha256``), which the engine's git
    layer does not read or write. ``None`` for anything else, a repository or not."""
    try:
        value = ConfigFile.from_path(str(_config_of(path))).get((b"extensions",), b"objectformat")
    except (OSError, ValueError, KeyError):
        return None
    found = value.decode("utf-8", "replace").strip().lower()
    if found in ("", "sha1"):
        return None
    return (
        f"a repository whose objects are named by {found[:40]}, which the engine does not "
        "support (only sha1)"
    )


class BranchNotFound(LookupError):
    pass


class BranchDamaged(ValueError):
    """The branch's ref holds something that is not the id of a stored object (a damaged
    ref file): what the branch is cannot be known until an operator repairs it."""


def make_dirs_within(controldir: Path, directory: Path) -> None:
    """Create ``directory`` (and the directories between) inside a repository's git
    directory ``controldir``, which must exist: ``FileNotFoundError`` if it does not. A
    repository moved away or deleted while the server runs is not made again as a skeleton
    of the engine's own files, which would stand in the way of putting it back."""
    missing = []
    for parent in (directory, *directory.parents):
        if parent == controldir:
            break
        missing.append(parent)
    else:
        raise ValueError(f"{directory} is not inside {controldir}")
    for parent in reversed(missing):
        parent.mkdir(exist_ok=True)


def is_stored(repo: Repo, sha: bytes) -> bool:
    """Whether ``sha`` is the hex id of an object ``repo`` holds (a ref file holding garbage,
    or an id whose object is gone, is not)."""
    return valid_hexsha(sha) and ObjectID(sha) in repo.object_store


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
    Each thread opens a repository of its own (see the module's docstring).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._opened: list[Repo] = []  # every thread's, closed by close()
        self._mine = threading.local()  # this thread's: generation and {name: Repo}
        self._generation = 0  # a close() makes every thread open its repositories again
        self._lock = threading.Lock()
        self.executor = ThreadPoolExecutor(thread_name_prefix="git")
        """Where callers run work on these repositories; :meth:`close` waits for it."""
        # the repositories found served, by their config file as it was then (size, time):
        # a lookup, made for every piece of git work, reads the file again only if it changed
        self._served: dict[Path, tuple[int, int]] = {}

    def path_of(self, name: str) -> Path:
        """Where repository ``name`` is; ``RepoNotFound`` if it is not there, or is in an
        object format the engine does not read (see :func:`unsupported`)."""
        for candidate in (self.root / name, self.root / f"{name}.git"):
            if (candidate / ".git").exists() or (candidate / "HEAD").is_file():
                if not self._supported(candidate):
                    raise RepoNotFound(name)
                return candidate
        raise RepoNotFound(name)

    def _supported(self, path: Path) -> bool:
        try:
            found = _config_of(path).stat()
            seen = (found.st_size, found.st_mtime_ns)
        except OSError:
            seen = (-1, -1)
        if self._served.get(path) == seen:
            return True
        if unsupported(path) is not None:
            return False
        self._served[path] = seen
        return True

    def open(self, name: str) -> Repo:
        """The calling thread's own ``Repo`` for repository ``name`` (opened on first use,
        and again once its directory was replaced by another); use it in this thread only."""
        mine: dict[str, tuple[Repo, tuple[int, int]]] | None = getattr(self._mine, "repos", None)
        if mine is None or self._mine.generation != self._generation:
            mine = self._mine.repos = {}
            self._mine.generation = self._generation
        path = self.path_of(name)
        identity = _identity(name, path)
        held = mine.get(name)
        if held is not None:
            if held[1] == identity:
                return held[0]
            # the repository was replaced since (another copy restored there): the old
            # one's packs, still open, would answer for objects the new one lacks
            with self._lock:
                self._opened.remove(held[0])
            held[0].close()
        repo = Repo(str(path))
        with self._lock:
            self._opened.append(repo)
        mine[name] = (repo, identity)
        return repo

    def identity(self, name: str) -> tuple[int, int]:
        """Which directory repository ``name`` is (its object directory's device and inode):
        another once the repository was replaced by another copy (see :meth:`open`).
        Raises ``RepoNotFound``."""
        return _identity(name, self.path_of(name))

    def close(self) -> None:
        """Wait for the work running in :attr:`executor`, then close every thread's
        repositories (work still running on a closed repository would open its files
        again)."""
        self.executor.shutdown(wait=True)
        with self._lock:
            self._generation += 1
            opened, self._opened = self._opened, []
        for repo in opened:
            repo.close()

    def has_work_tree(self, name: str) -> bool:
        """Whether repository ``name`` is not bare: the engine never updates a work tree, so
        one only ever falls behind the branch it has checked out."""
        return (self.path_of(name) / ".git").exists()

    def names(self) -> list[str]:
        """The repositories' names, each once: with both ``x`` and ``x.git`` present, ``x``
        is the one served (see :meth:`path_of`)."""
        found: list[str] = []
        for child in sorted(self.root.iterdir()) if self.root.is_dir() else []:
            name = child.name.removesuffix(".git")
            if not name:  # the root's own ``.git``: the root is a repository, not named here
                continue
            try:
                self.path_of(name)
            except RepoNotFound:
                continue
            if name not in found:
                found.append(name)
        return found

    def others(self, served: Collection[str]) -> list[tuple[str, str]]:
        """The folders under the root that are not served, by name, given the repositories'
        names (:meth:`names`), each with the reason; hidden ones (``.git``, the engine's
        own) left out."""
        return [
            (child.name, unsupported(child) or _NO_REPOSITORY)
            for child in (sorted(self.root.iterdir()) if self.root.is_dir() else [])
            if child.is_dir()
            and not child.name.startswith(".")
            and child.name.removesuffix(".git") not in served
        ]

    def branch_head(self, name: str, branch: str) -> bytes:
        """The commit ``branch`` of repository ``name`` points to. Raises ``RepoNotFound``,
        ``BranchNotFound``, and ``BranchDamaged`` if the ref holds no stored object's id."""
        repo = self.open(name)
        ref = Ref(b"refs/heads/" + branch.encode())
        try:
            head = bytes(repo.refs[ref])
        except KeyError:
            raise BranchNotFound(f"{name}/{branch}") from None
        if not is_stored(repo, head):
            raise BranchDamaged(
                f"the ref of branch {branch!r} in {name!r} is damaged: it holds "
                f"{head[:60]!r}, which is no stored object's id"
            )
        return head

    def read_file(self, name: str, branch: str, path: str) -> FileBlob:
        """Read ``path`` at the head of ``branch``; a missing file reads as empty."""
        repo = self.open(name)
        commit = repo[self.branch_head(name, branch)]
        assert isinstance(commit, Commit)
        try:
            mode, sha = tree_lookup_path(repo.object_store.__getitem__, commit.tree, path.encode())
        except KeyError:
            return FileBlob(None, "")
        except (NotTreeError, SubmoduleEncountered):
            raise BlobNotText(f"{path} lies below a file, a symbolic link or a submodule") from None
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


def _identity(name: str, path: Path) -> tuple[int, int]:
    try:  # (a work tree may hold a directory named objects: its git directory first)
        found = (path / ".git" / "objects").stat()
    except OSError:
        try:
            found = (path / "objects").stat()
        except OSError:
            raise RepoNotFound(name) from None
    return found.st_dev, found.st_ino


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
        commit.author_timezone = commit.commit_timezone = local_offset(commit.commit_time)
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
