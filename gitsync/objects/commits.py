"""Commits written straight to the object store, and branch refs moved by compare-and-swap.

A commit's tree is rebuilt incrementally from its parent's: only the trees on the changed paths
are read and rewritten, so the cost follows the depth of the changed paths, not the size of the
repository. New objects are on disk, fsynced, before the ref moves (one small pack per commit;
small packs are combined as they accumulate, see :mod:`gitsync.packs.write`), and a ref moves only
if it still holds the commit the change was based on, so a branch never moves backwards and no
concurrent commit is lost. The objects are written first (``write_commit``), the ref moved
after (``land_commit``): a caller that must hold a lock for the move (a branch's fence, see
:mod:`gitsync.fence`) holds it for the move alone, not for the writes and their fsyncs. A
lock file left on a ref by a crash is removed once it is old (see :mod:`gitsync.locks`).
"""

from __future__ import annotations

import logging
import re
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from dulwich.objects import Blob, Commit, ObjectID, ShaFile, Tree, hex_to_sha
from dulwich.refs import Ref, parse_symref_value
from dulwich.repo import Repo

from protocol.names import validate_branch, validate_path

from ..locks import LOCK_WAIT, STALE_AFTER, call_past_stale_locks, recover_stale_locks
from ..naming import participant_handle
from ..packs.write import combine_small_packs, write_pack
from .ref_names import check_new_ref

__all__ = [
    "BlobEntry",
    "BranchExists",
    "NothingToCommit",
    "RefMoved",
    "WrittenCommit",
    "author_line",
    "branch_heads",
    "branch_ref",
    "clear_committing",
    "clear_merging",
    "combine_packs",
    "commit_changes",
    "commit_message",
    "create_branch",
    "delete_branch",
    "edit_tree",
    "fast_forward",
    "forget_records",
    "free_branch",
    "land_commit",
    "local_offset",
    "move_as_synced",
    "read_committing",
    "read_merging",
    "read_object",
    "read_ref",
    "read_synced",
    "recover_stale_locks",
    "set_committing",
    "set_merging",
    "set_synced",
    "stale_records",
    "synced_ref",
    "write_commit",
    "write_objects",
]

HEADS = b"refs/heads/"
SYNCED = b"refs/collab/synced/"
COMMITTING = b"refs/collab/committing/"
MERGING = b"refs/collab/merging/"
FILE_MODE = stat.S_IFREG | 0o644
DIR_MODE = stat.S_IFDIR
LINK_MODE = stat.S_IFLNK
GITLINK_MODE = 0o160000
EMPTY_TREE = Tree()

_Changes = dict[bytes, "_Changes | bytes | BlobEntry | None"]
_T = TypeVar("_T")
log = logging.getLogger("gitsync.commits")


@dataclass(frozen=True, slots=True)
class BlobEntry:
    """A file for a commit by blob id and mode, as a tree holds it; ``data`` is the blob's
    content when it may not be stored yet (it is then written with the commit)."""

    mode: int
    sha: bytes
    data: bytes | None = None

    @classmethod
    def of(cls, mode: int, data: bytes) -> BlobEntry:
        """The entry for new content ``data``."""
        return cls(mode, bytes(Blob.from_string(data).id), data)


class RefMoved(Exception):
    """A ref no longer holds the value a write expected; ``current`` is what it holds now."""

    def __init__(self, ref: bytes, expected: bytes | None, current: bytes | None) -> None:
        super().__init__(
            f"{ref.decode(errors='replace')} is at {_short(current)}, expected {_short(expected)}"
        )
        self.ref = ref
        self.expected = expected
        self.current = current


class NothingToCommit(Exception):
    """The changes leave the parent's tree as it was."""


class BranchExists(Exception):
    """A branch to be created already exists."""


def _short(sha: bytes | None) -> str:
    return "nothing" if sha is None else sha[:12].decode("ascii", "replace")


def branch_ref(branch: str) -> bytes:
    """``refs/heads/<branch>`` for a valid branch name."""
    return HEADS + validate_branch(branch).encode("utf-8")


def synced_ref(branch: str) -> bytes:
    """The private ref recording which commit of ``branch`` the live documents last matched."""
    return SYNCED + validate_branch(branch).encode("utf-8")


def head_target(repo: Repo) -> bytes | None:
    """The ref ``HEAD`` names (``refs/heads/main``), or None for a detached ``HEAD``. Only
    ``HEAD`` is read: a walk of every ref (dulwich's ``get_symrefs``) fails on a ref deleted
    while it walks."""
    value = repo.refs.read_ref(Ref(b"HEAD"))
    if value is None:
        return None
    try:
        return bytes(parse_symref_value(value))
    except ValueError:  # an id: detached
        return None


def read_ref(repo: Repo, ref: bytes) -> bytes | None:
    """The value of ``ref``, or ``None`` if it does not exist."""
    try:
        return bytes(repo.refs[Ref(ref)])
    except KeyError:
        return None


def local_offset(when: int) -> int:
    """The local time zone's offset from UTC at ``when``, in seconds east, as git stamps a
    commit made here (``TZ`` of the process), in whole minutes as git writes it."""
    return round(time.localtime(when).tm_gmtoff / 60) * 60


def author_line(name: str, email: str | None = None) -> str:
    """``Name <email>``; characters git forbids are dropped. A missing email is made up from
    the name, one per name (``<slug>-<hash>@collab.invalid``, as the person's branch)."""
    clean_name = " ".join(name.replace("<", " ").replace(">", " ").split()) or "unknown"
    if email is None:
        email = f"{participant_handle(name or 'unknown')}@collab.invalid"
    clean_email = "".join(ch for ch in email if ch not in "<> \n\r\t\x00")
    return f"{clean_name} <{clean_email}>"


def commit_message(files: Sequence[str], co_authors: Sequence[str] = ()) -> str:
    """A message naming the changed files, with a ``Co-authored-by:`` trailer per co-author."""
    names = list(dict.fromkeys(files))
    if not names:
        subject = "Edit files"
    elif len(names) <= 3:
        subject = "Edit " + ", ".join(names)
    else:
        subject = f"Edit {', '.join(names[:2])} and {len(names) - 2} more files"
    trailers = "".join(f"Co-authored-by: {who}\n" for who in dict.fromkeys(co_authors))
    return f"{subject}\n\n{trailers}" if trailers else f"{subject}\n"


def branch_heads(repo: Repo) -> dict[str, bytes]:
    """Every ``refs/heads/*`` branch and the commit it points to."""
    heads = repo.refs.as_dict(Ref(HEADS))
    return {bytes(name).decode("utf-8", "replace"): bytes(sha) for name, sha in heads.items()}


def _nest(changes: Mapping[str, bytes | BlobEntry | None]) -> _Changes:
    """Group changes by directory. A file may replace a directory and a directory a file, as
    long as the replaced side only has deletions below it; otherwise ``ValueError``."""
    root: _Changes = {}
    for path, content in changes.items():
        try:  # a name git holds that is not UTF-8 comes decoded with surrogateescape
            raw = path.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raise ValueError(f"path {path!r} is not valid Unicode") from None
        shown = raw.decode("utf-8", "replace")
        if validate_path(shown) != shown:
            raise ValueError(f"path {path!r} is not normalised")
        *dirs, leaf = raw.split(b"/")
        node: _Changes | None = root
        for part in dirs:
            assert node is not None
            child = node.get(part)
            if isinstance(child, (bytes, BlobEntry)):
                if content is not None:
                    raise ValueError(f"{path!r} lies under a file that is also written")
                node = None  # a deletion below a file that replaces the directory
                break
            if child is None:
                child = node[part] = {}
            node = child
        if node is None:
            continue
        existing = node.get(leaf)
        if isinstance(existing, dict):
            if content is None:
                continue  # the directory replaces the deleted file
            if not _only_deletions(existing):
                raise ValueError(f"{path!r} is written both as a file and as a directory")
        node[leaf] = content
    return root


def _only_deletions(node: _Changes) -> bool:
    return all(
        change is None or (isinstance(change, dict) and _only_deletions(change))
        for change in node.values()
    )


def read_object(repo: Repo, sha: bytes) -> ShaFile:
    """Read object ``sha`` (KeyError if the repository lacks it)."""
    return repo.object_store[ObjectID(sha)]


class _ObjectCache:
    """The raw content of trees and commits recently read or committed, by repository and id.

    Continuous commits rewrite the same few paths of a branch, so the parent commit and the
    trees a commit reads are usually what the previous commit on that branch wrote. Only
    objects read through a commit, or committed by a ref move that won, are put here. A
    commit can still be pruned once its branch is deleted (``git gc``), so a cached commit is
    trusted only while the store still has it; its trees go with it.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.raw: OrderedDict[tuple[str, bytes], tuple[int, bytes]] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, repo: Repo, sha: bytes) -> ShaFile | None:
        key = (repo.path, sha)
        with self.lock:
            found = self.raw.get(key)
            if found is None:
                return None
            self.raw.move_to_end(key)
        return ShaFile.from_raw_string(found[0], found[1], sha=ObjectID(sha))

    def put(self, repo: Repo, obj: ShaFile) -> None:
        key = (repo.path, bytes(obj.id))
        value = (obj.type_num, obj.as_raw_string())
        with self.lock:
            self.raw[key] = value
            self.raw.move_to_end(key)
            while len(self.raw) > self.capacity:
                self.raw.popitem(last=False)


_cache = _ObjectCache(capacity=4096)


def _read_cached(repo: Repo, sha: bytes) -> ShaFile:
    obj = _cache.get(repo, sha)
    if obj is None:
        obj = read_object(repo, sha)
        if isinstance(obj, (Tree, Commit)):
            _cache.put(repo, obj)
    return obj


def _read_tree(repo: Repo, sha: bytes) -> Tree:
    obj = _read_cached(repo, sha)
    if not isinstance(obj, Tree):
        raise ValueError(f"{_short(sha)} is not a tree")
    return obj


def _rewrite(
    repo: Repo, tree_id: bytes | None, changes: _Changes, out: list[ShaFile], *, text_only: bool
) -> bytes | None:
    """Apply ``changes`` to the tree ``tree_id``; return the new tree id (None when empty).
    ``text_only``: content is only ever written as a regular file where nothing else is."""
    tree = Tree() if tree_id is None else _read_tree(repo, tree_id)
    edits: dict[bytes, tuple[int, bytes] | None] = {}
    for name, change in changes.items():
        entry: tuple[int, bytes] | None
        try:
            entry = tree[name]
        except KeyError:
            entry = None
        if isinstance(change, dict):
            if text_only and entry is not None and not stat.S_ISDIR(entry[0]):
                _kept(name, entry[0])  # text below a file, a link or a submodule
                continue
            old_sub = entry[1] if entry is not None and stat.S_ISDIR(entry[0]) else None
            new_sub = _rewrite(repo, old_sub, change, out, text_only=text_only)
            if new_sub is None:
                if old_sub is not None:
                    edits[name] = None
            elif new_sub != old_sub:
                edits[name] = (DIR_MODE, new_sub)
        elif change is None:
            if entry is not None:
                edits[name] = None
        elif isinstance(change, BlobEntry):
            if entry is None or (entry[0], entry[1]) != (change.mode, change.sha):
                if change.data is not None:
                    out.append(Blob.from_string(change.data))
                edits[name] = (change.mode, change.sha)
        else:
            if entry is not None and (
                entry[0] in (LINK_MODE, GITLINK_MODE) or (text_only and stat.S_ISDIR(entry[0]))
            ):
                _kept(name, entry[0])
                continue
            blob = Blob.from_string(change)
            mode = entry[0] if entry is not None and stat.S_ISREG(entry[0]) else FILE_MODE
            if entry is None or (entry[0], entry[1]) != (mode, blob.id):
                out.append(blob)
                edits[name] = (mode, bytes(blob.id))
    if not edits:
        return tree_id
    raw = edit_tree(tree.as_raw_string(), edits)
    if not raw:
        return None
    new = Tree.from_raw_string(Tree.type_num, raw)
    out.append(new)
    return bytes(new.id)


def _kept(name: bytes, mode: int) -> None:
    """Text is never written over a symbolic link or a submodule (nor, for a live document's
    text, over a directory or below anything but one): the entry is kept as it is, and the
    text is not committed."""
    log.warning(
        "commit: %r is not a regular file (mode %o) in the tree; its text is not committed",
        name.decode("utf-8", "replace"),
        mode,
    )


def canonical_mode(mode: int) -> int:
    """The mode git writes for an entry of mode ``mode`` (its ``canon_mode``): a regular
    file is ``100644``, or ``100755`` if its owner may run it; a directory ``40000``."""
    kind = stat.S_IFMT(mode)
    if kind == stat.S_IFREG:
        return stat.S_IFREG | (0o755 if mode & 0o100 else 0o644)
    if kind in (stat.S_IFDIR, stat.S_IFLNK):
        return kind
    return GITLINK_MODE


_CANONICAL_MODES = frozenset((b"100644", b"100755", b"120000", b"160000", b"40000"))
# a tree whose every entry has a mode git writes (old histories hold others: 100664, and a
# zero-padded 040000), matched entry by entry
_CANONICAL_TREE = re.compile(rb"(?:(?:100644|100755|120000|160000|40000) [^\x00]*\x00[\s\S]{20})*")


def edit_tree(raw: bytes, edits: Mapping[bytes, tuple[int, bytes] | None]) -> bytes:
    """The content of a tree (``raw``, as stored) with ``edits`` applied: name -> (mode, hex
    id), or None to remove the entry. Entries keep git's order (a directory sorts as if its
    name ended in ``/``); the entries not edited are copied as they are, not re-encoded,
    except a mode git would not write, which is written as git writes it (see
    :func:`canonical_mode`), as a tree git rewrites gets it."""
    odd = _CANONICAL_TREE.fullmatch(raw) is None
    pending = sorted(
        (_sort_key(name, mode), name, mode, sha)
        for name, edit in edits.items()
        if edit is not None
        for mode, sha in (edit,)
    )
    # entries still to be removed or replaced (a name found inside an id only over-counts,
    # which costs a longer walk, never a wrong tree)
    to_skip = sum(raw.find(b" " + name + b"\0") >= 0 for name in edits)
    chunks: list[bytes] = []
    waiting = 0
    pos, size = 0, len(raw)
    while pos < size:
        if waiting == len(pending) and not to_skip and not odd:
            chunks.append(raw[pos:])  # nothing left to place or remove
            break
        space = raw.index(b" ", pos)
        nul = raw.index(b"\0", space)
        end = nul + 21
        name = raw[space + 1 : nul]
        if name in edits:
            to_skip -= 1
        else:
            mode = int(raw[pos:space], 8)
            key = _sort_key(name, mode)
            while waiting < len(pending) and pending[waiting][0] < key:
                chunks.append(_entry(*pending[waiting][1:]))
                waiting += 1
            if odd and raw[pos:space] not in _CANONICAL_MODES:
                chunks.append(b"%o %s" % (canonical_mode(mode), raw[space + 1 : end]))
            else:
                chunks.append(raw[pos:end])
        pos = end
    chunks.extend(_entry(*item[1:]) for item in pending[waiting:])
    return b"".join(chunks)


def _sort_key(name: bytes, mode: int) -> bytes:
    return name + b"/" if stat.S_ISDIR(mode) else name


def _entry(name: bytes, mode: int, sha: bytes) -> bytes:
    return b"%o %s\0%s" % (canonical_mode(mode), name, hex_to_sha(ObjectID(sha)))


def write_objects(repo: Repo, objects: Sequence[ShaFile]) -> None:
    """Write ``objects`` durably as one pack (see :mod:`gitsync.packs.write`); return once they
    are on disk.

    Whether the store already holds an object is not looked up: that would load the index of
    every pack, which costs more than writing the few objects a commit makes. A content that
    comes back (a file undone to an earlier version) is then stored twice until its packs
    are combined, which git allows.
    """
    unique = list({bytes(obj.id): obj for obj in objects}.values())
    if unique:
        write_pack(repo.object_store, unique)


def _commit_object(repo: Repo, sha: bytes, what: str, *, stored: bool = False) -> Commit:
    """Commit ``sha``; with ``stored``, only if the store has it, whatever the cache says (a
    commit no ref holds may have been pruned). A parent that is the ref's expected value
    needs no such check: the compare-and-swap fails unless a ref still holds it."""
    try:
        obj = read_object(repo, sha) if stored else _read_cached(repo, sha)
    except KeyError:
        raise ValueError(f"{what} {_short(sha)} is not in the repository") from None
    if not isinstance(obj, Commit):
        raise ValueError(f"{what} {_short(sha)} is not a commit")
    return obj


def _check_identity(line: str) -> bytes:
    name, sep, rest = line.partition(" <")
    if not sep or not rest.endswith(">") or "<" in rest or "\n" in line or not name.strip():
        raise ValueError(f"identity {line!r} is not of the form 'Name <email>'")
    return line.encode("utf-8")


def _swap(repo: Repo, ref: bytes, expected: bytes | None, new: bytes) -> None:
    """Move ``ref`` from ``expected`` (None: absent) to ``new``, or raise :class:`RefMoved`."""

    def attempt() -> bool:
        if expected is None:
            return bool(repo.refs.add_if_new(Ref(ref), ObjectID(new)))
        return bool(repo.refs.set_if_equals(Ref(ref), ObjectID(expected), ObjectID(new)))

    if not _past_locks(attempt):
        raise RefMoved(ref, expected, read_ref(repo, ref))


def _past_locks(attempt: Callable[[], _T]) -> _T:
    return call_past_stale_locks(attempt, stale_after=STALE_AFTER, wait=LOCK_WAIT)


def commit_changes(
    repo: Repo,
    branch: str,
    changes: Mapping[str, bytes | BlobEntry | None],
    *,
    message: str,
    author: str,
    committer: str | None = None,
    expected: bytes | None,
    extra_parents: Sequence[bytes] = (),
    timestamp: int | None = None,
    allow_empty: bool = False,
    before_move: Callable[[bytes], None] | None = None,
    text_only: bool = False,
    new_branch: bool = False,
) -> bytes:
    """Commit ``changes`` (path -> content, or a :class:`BlobEntry`; ``None`` deletes) on top
    of ``expected``. Content keeps the file's mode (a new file gets 100644); an entry sets it.
    ``before_move`` is called with the new commit's id once it is stored, before the branch
    is moved to it. ``text_only`` (live documents' text): content never replaces a
    directory, and never goes below a file, a link or a submodule; such an entry is kept.

    ``expected`` is the parent commit and the value ``refs/heads/<branch>`` must still hold;
    ``None`` makes a root commit on a branch that must not exist yet. ``new_branch``: the
    branch must not exist yet, and is made at the new commit (whose parent is ``expected``):
    it never exists without it; :class:`BranchExists` or
    :class:`~gitsync.objects.ref_names.RefClash` as :func:`create_branch` raises them. Raises
    :class:`NothingToCommit` if the tree is unchanged and there are no ``extra_parents``
    (unless ``allow_empty``), and :class:`RefMoved` if the branch moved meanwhile: the new
    objects are then written but unreferenced, and the caller rebuilds on ``current``.
    Returns the new commit id.

    The three steps are :func:`write_commit`, :func:`land_commit` and
    :func:`combine_packs`, for a caller that holds a lock around the move alone.
    """
    written = write_commit(
        repo,
        branch,
        changes,
        message=message,
        author=author,
        committer=committer,
        expected=expected,
        extra_parents=extra_parents,
        timestamp=timestamp,
        allow_empty=allow_empty,
        text_only=text_only,
        new_branch=new_branch,
    )
    land_commit(repo, branch, written, expected, before_move=before_move, new_branch=new_branch)
    combine_packs(repo)
    return written.id


@dataclass(frozen=True, slots=True)
class WrittenCommit:
    """A commit whose objects are stored durably, no branch moved to it yet (see
    :func:`write_commit`)."""

    id: bytes
    objects: tuple[ShaFile, ...]
    """What was written for it, kept in the tree cache once it lands."""


def write_commit(
    repo: Repo,
    branch: str,
    changes: Mapping[str, bytes | BlobEntry | None],
    *,
    message: str,
    author: str,
    committer: str | None = None,
    expected: bytes | None,
    extra_parents: Sequence[bytes] = (),
    timestamp: int | None = None,
    allow_empty: bool = False,
    text_only: bool = False,
    new_branch: bool = False,
) -> WrittenCommit:
    """Build the commit of ``changes`` on top of ``expected`` and write its new objects as
    one fsynced pack (the slow part of a commit), without moving any ref: see
    :func:`commit_changes` for the arguments; raises :class:`NothingToCommit` as it does."""
    ref = branch_ref(branch)
    author_bytes = _check_identity(author)
    committer_bytes = _check_identity(committer) if committer is not None else author_bytes
    if new_branch and read_ref(repo, ref) is None:
        check_new_ref(repo.refs, ref)
    parent_tree = (
        None
        if expected is None
        else _commit_object(repo, expected, "parent", stored=new_branch).tree
    )
    for extra in extra_parents:
        _commit_object(repo, extra, "extra parent", stored=True)
    objects: list[ShaFile] = []
    tree_id = _rewrite(repo, parent_tree, _nest(changes), objects, text_only=text_only)
    if tree_id is None:
        tree_id = bytes(EMPTY_TREE.id)
        objects.append(EMPTY_TREE)
    if tree_id == parent_tree and not extra_parents and not allow_empty:
        raise NothingToCommit(f"the changes leave {branch} as it is")
    if expected is None and not changes and not allow_empty:
        raise NothingToCommit(f"no files to commit on the new branch {branch}")
    commit = Commit()
    commit.tree = ObjectID(tree_id)
    parents = [] if expected is None else [expected]
    parents += [p for p in dict.fromkeys(extra_parents) if p not in parents]
    commit.parents = [ObjectID(p) for p in parents]
    commit.author = author_bytes
    commit.committer = committer_bytes
    when = int(time.time()) if timestamp is None else timestamp
    commit.author_time = commit.commit_time = when
    commit.author_timezone = commit.commit_timezone = local_offset(when)
    commit.message = (
        message.encode("utf-8") if message.endswith("\n") else (message + "\n").encode()
    )
    objects.append(commit)
    write_objects(repo, objects)
    return WrittenCommit(bytes(commit.id), tuple(objects))


def land_commit(
    repo: Repo,
    branch: str,
    commit: WrittenCommit,
    expected: bytes | None,
    *,
    before_move: Callable[[bytes], None] | None = None,
    new_branch: bool = False,
) -> bytes:
    """Move ``branch`` from ``expected`` to ``commit`` (written by :func:`write_commit` with
    the same ``expected`` and ``new_branch``), calling ``before_move`` with its id first;
    :class:`RefMoved` (or :class:`BranchExists`) as :func:`commit_changes` raises them.
    Returns the commit's id."""
    if before_move is not None:
        before_move(commit.id)
    try:
        _swap(repo, branch_ref(branch), None if new_branch else expected, commit.id)
    except RefMoved as exc:
        if not new_branch:
            raise
        raise BranchExists(f"branch {branch} already exists at {_short(exc.current)}") from None
    for obj in commit.objects:
        if isinstance(obj, (Tree, Commit)):
            _cache.put(repo, obj)
    return commit.id


def combine_packs(repo: Repo) -> None:
    """Combine the repository's small packs once a commit has landed, if there are too many
    (see :mod:`gitsync.packs.write`); a failure is logged, and left to a later commit."""
    try:
        combine_small_packs(repo.object_store)
    except Exception:  # the commit has landed; the packs are combined on a later one
        log.exception("combining the small packs of %s failed", repo.path)


def free_branch(repo: Repo, name: str) -> str:
    """``name``, or ``name-2``, ``name-3``... whichever branch does not exist yet."""
    candidate, n = name, 1
    while read_ref(repo, branch_ref(candidate)) is not None:
        n += 1
        candidate = f"{name}-{n}"
    return candidate


def create_branch(repo: Repo, name: str, at: bytes) -> None:
    """Create ``name`` at commit ``at``; raise :class:`BranchExists` if it already exists,
    :class:`~gitsync.objects.ref_names.RefClash` if git could not hold it beside the
    branches there are (``a`` beside ``a/b``) or it is reserved."""
    ref = branch_ref(name)
    if read_ref(repo, ref) is None:
        check_new_ref(repo.refs, ref)
    _commit_object(repo, at, "start point", stored=True)
    try:
        _swap(repo, ref, None, at)
    except RefMoved as exc:
        raise BranchExists(f"branch {name} already exists at {_short(exc.current)}") from None


def fast_forward(repo: Repo, name: str, expected: bytes, new: bytes) -> None:
    """Move branch ``name`` from ``expected`` to ``new``, a commit that descends from it (the
    caller knows it does: a merge plan says so); raise :class:`RefMoved` if the branch no
    longer points to ``expected``."""
    _commit_object(repo, new, "fast-forward target", stored=True)
    _swap(repo, branch_ref(name), expected, new)


def delete_branch(repo: Repo, name: str, expected: bytes) -> None:
    """Delete ``name`` if it still points to ``expected``, else raise :class:`RefMoved`."""
    ref = branch_ref(name)

    def attempt() -> bool:
        return bool(repo.refs.remove_if_equals(Ref(ref), ObjectID(expected)))

    if not _past_locks(attempt):
        raise RefMoved(ref, expected, read_ref(repo, ref))


def read_synced(repo: Repo, branch: str) -> bytes | None:
    """The commit of ``branch`` the live documents were last reconciled with, if recorded."""
    return read_ref(repo, synced_ref(branch))


def set_synced(repo: Repo, branch: str, value: bytes) -> None:
    """Record that the live documents of ``branch`` match commit ``value``."""
    ref = Ref(synced_ref(branch))
    _past_locks(lambda: repo.refs.set_if_equals(ref, None, ObjectID(value)))


def read_committing(repo: Repo, branch: str) -> bytes | None:
    """The commit of the live documents' text that was being put on ``branch``, if a
    continuous commit was under way (see :func:`set_committing`)."""
    return read_ref(repo, _record(COMMITTING, branch))


def set_committing(repo: Repo, branch: str, value: bytes | None) -> None:
    """Record (``None``: forget) that commit ``value``, made of the live documents' text, is
    being put on ``branch``: from before the branch moves to it until it is recorded as
    synced, so that a crash between the two is known for what it was."""
    _set_record(repo, _record(COMMITTING, branch), value)


def move_as_synced(
    repo: Repo, branch: str, move: Callable[[Callable[[bytes], None]], bytes]
) -> bytes:
    """Move ``branch`` to a commit the live documents hold already (their own text, or a
    merge made in them), and record it as synced, with the commit recorded as under way in
    between (:func:`set_committing`). ``move(record)`` calls ``record(commit)`` before it
    moves the branch, and returns the commit; if it raises, the branch did not move."""
    try:
        new = move(lambda made: set_committing(repo, branch, made))
    except BaseException:
        set_committing(repo, branch, None)
        raise
    set_synced(repo, branch, new)
    set_committing(repo, branch, None)
    return new


def clear_committing(repo: Repo, branch: str, value: bytes) -> None:
    """Forget the record of commit ``value`` under way on ``branch``, if it still holds it."""
    _clear_record(repo, _record(COMMITTING, branch), value)


def read_merging(repo: Repo, branch: str) -> bytes | None:
    """The commit of ``branch`` whose changes were being merged into the live documents, if
    a merge was under way (see :func:`set_merging`)."""
    return read_ref(repo, _record(MERGING, branch))


def set_merging(repo: Repo, branch: str, value: bytes) -> None:
    """Record that the changes up to commit ``value`` of ``branch`` are being merged into the
    live documents, until it is recorded as synced: the marks of ``value`` found in a
    document after a crash are then this merge's, not an older one's of the same commit."""
    _set_record(repo, _record(MERGING, branch), value)


def clear_merging(repo: Repo, branch: str, value: bytes) -> None:
    """Forget the record of the merge of ``value`` into ``branch``'s documents, if it still
    holds it."""
    _clear_record(repo, _record(MERGING, branch), value)


def forget_records(repo: Repo, branch: str) -> None:
    """Remove every private record of ``branch`` (it is deleted): which commit its documents
    matched, and a commit or merge under way."""
    for kind in (SYNCED, COMMITTING, MERGING):
        _set_record(repo, _record(kind, branch), None)


def stale_records(repo: Repo, branch: str, *, namesake: bool = False) -> list[str]:
    """The branches that no longer exist whose private records would keep ``branch``'s from
    being written: under a name that is a directory of ``branch`` (``a`` for ``a/b``), or
    under ``branch`` as a directory (``a/b`` for ``a``), as git's refs cannot be both; with
    ``namesake``, under ``branch`` itself too (its records would be taken for those of a
    branch made again under the name). The engine forgets a branch's records when a branch
    is deleted through it; one deleted by another tool leaves them."""
    parts = validate_branch(branch).split("/")
    found: set[str] = set()
    for kind in (SYNCED, COMMITTING, MERGING):
        if namesake and read_ref(repo, kind + branch.encode("utf-8")) is not None:
            found.add(branch)
        for end in range(1, len(parts)):
            above = "/".join(parts[:end])
            if read_ref(repo, kind + above.encode("utf-8")) is not None:
                found.add(above)
        below = kind + branch.encode("utf-8") + b"/"
        found.update(f"{branch}/{name.decode('utf-8')}" for name in repo.refs.keys(base=Ref(below)))
    return sorted(name for name in found if read_ref(repo, HEADS + name.encode("utf-8")) is None)


def _record(kind: bytes, branch: str) -> Ref:
    return Ref(kind + validate_branch(branch).encode("utf-8"))


def _set_record(repo: Repo, ref: Ref, value: bytes | None) -> None:
    if value is None:
        _past_locks(lambda: repo.refs.remove_if_equals(ref, None))
    else:
        _past_locks(lambda: repo.refs.set_if_equals(ref, None, ObjectID(value)))


def _clear_record(repo: Repo, ref: Ref, value: bytes) -> None:
    _past_locks(lambda: repo.refs.remove_if_equals(ref, ObjectID(value)))
