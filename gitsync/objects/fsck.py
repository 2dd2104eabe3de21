"""Received objects checked as ``git fsck --strict`` (and ``receive.fsckObjects``) checks them.

:class:`ObjectChecker` is fed each object of a push (type, id, raw content) and raises
:class:`FsckError` for the first one git would refuse, with git's message id (``hasDotgit``,
``badTimezone``, ...), so that a refused push names what is wrong. It checks:

- trees: each entry parses (octal mode, a name, a NUL, a whole id); names that are empty,
  ``.``, ``..``, contain ``/``, longer than :data:`MAX_NAME`, or are ``.git`` in any spelling
  a filesystem folds to it (:mod:`protocol.dotgit`); modes of no type git knows (another
  mode of a file, as old gits wrote ``100664``, only makes git warn: it is taken), or written
  with a leading zero; duplicate names; entries out of git's order; null ids; a
  ``.gitmodules`` that is a symbolic link;
- commits: ``tree``, ``parent``, one ``author`` and a ``committer`` line, in that order, ids in
  lower-case hex, identities ``Name <email> seconds +zone``; no NUL anywhere;
- tags: ``object``, ``type``, ``tag`` and (if present) ``tagger`` lines;
- ``.gitmodules`` blobs (:mod:`gitsync.objects.gitmodules`) and ``.gitattributes`` blobs
  (line length).

It also records what each object refers to, and :meth:`ObjectChecker.finish` checks that every
reference is to an object of the right type, sent with it or already stored (as index-pack
``--strict`` does), so that no ref can come to point at an incomplete history.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from protocol.dotgit import is_dotgit, is_hfs_dot, is_ntfs_dot

from .gitmodules import gitmodules_problems

__all__ = [
    "BLOB",
    "COMMIT",
    "IDENT_PROBLEMS",
    "MAX_NAME",
    "TAG",
    "TREE",
    "FsckError",
    "ObjectChecker",
    "check_commit",
    "check_tag",
    "check_tree",
    "file_problem",
    "is_special_file",
]

COMMIT, TREE, BLOB, TAG = 1, 2, 3, 4
TYPE_NAMES = {COMMIT: "commit", TREE: "tree", BLOB: "blob", TAG: "tag"}
_TYPE_NUMS = {name.encode(): num for num, name in TYPE_NAMES.items()}

MAX_NAME = 4096
"""Longest tree entry name accepted (git's ``largePathname`` default)."""
MAX_GITMODULES = 16 << 20
"""Largest ``.gitmodules`` blob that is parsed; a larger one is refused (``gitmodulesLarge``)."""
MAX_GITATTRIBUTES = 100 << 20
"""Largest ``.gitattributes`` blob git reads (``gitattributesLarge``)."""
MAX_ATTRIBUTE_LINE = 2048
"""Longest ``.gitattributes`` line git reads, newline excluded (``gitattributesLineLength``)."""

_DIR, _GITLINK, _SYMLINK = 0o040000, 0o160000, 0o120000
_MODES = frozenset([0o100644, 0o100755, _SYMLINK, _DIR, _GITLINK])
_TYPE_BITS = 0o170000
_TYPES = frozenset([0o100000, _SYMLINK, _DIR, _GITLINK])  # file, link, tree, submodule
_OID = 20
_HEX = re.compile(rb"[0-9a-f]{40}")
_NULL = b"\0" * _OID


class FsckError(ValueError):
    """An object git's fsck would refuse: ``msg_id`` is git's id for the problem."""

    def __init__(self, sha: bytes, kind: str, msg_id: str, message: str) -> None:
        super().__init__(f"{kind} {sha.decode('ascii')}: {msg_id}: {message}")
        self.sha = sha
        self.msg_id = msg_id
        self.message = message


@dataclass(frozen=True, slots=True)
class TreeEntry:
    mode: int
    name: bytes
    oid: bytes
    """Binary id."""


def _tree_entries(sha: bytes, raw: bytes) -> Iterator[tuple[bytes, TreeEntry]]:
    """Each entry of a tree with its mode as written; ``badTree`` if it does not parse."""
    pos = 0
    while pos < len(raw):
        space = raw.find(b" ", pos)
        nul = raw.find(b"\0", space + 1) if space >= 0 else -1
        mode_text = raw[pos:space]
        if (
            nul < 0
            or not mode_text
            or mode_text.strip(b"01234567")
            or nul == space + 1
            or nul + 1 + _OID > len(raw)
        ):
            raise FsckError(sha, "tree", "badTree", "cannot be parsed as a tree")
        oid = raw[nul + 1 : nul + 1 + _OID]
        yield mode_text, TreeEntry(int(mode_text, 8), raw[space + 1 : nul], oid)
        pos = nul + 1 + _OID


_TREE_PROBLEMS = (
    ("nullSha1", "contains entries pointing to null sha1"),
    ("fullPathname", "contains full pathnames"),
    ("hasDot", "contains '.'"),
    ("hasDotdot", "contains '..'"),
    ("hasDotgit", "contains '.git'"),
    ("zeroPaddedFilemode", "contains zero-padded file modes"),
    ("badFilemode", "contains bad file modes"),
    ("duplicateEntries", "contains duplicate file entries"),
    ("treeNotSorted", "not properly sorted"),
    ("largePathname", "contains excessively large pathname"),
)
"""What a tree may be refused for, in the order git reports them."""


def check_tree(sha: bytes, raw: bytes) -> list[TreeEntry]:
    """The entries of tree ``sha`` (hex) once checked; :class:`FsckError` for the first
    problem, in git's order."""
    entries: list[TreeEntry] = []
    names: set[bytes] = set()
    found: set[str] = set()
    previous = b""
    for mode_text, entry in _tree_entries(sha, raw):
        name, mode = entry.name, entry.mode
        flags = {
            "nullSha1": entry.oid == _NULL,
            "fullPathname": b"/" in name,
            "hasDot": name == b".",
            "hasDotdot": name == b"..",
            "hasDotgit": is_dotgit(name),
            "zeroPaddedFilemode": mode_text.startswith(b"0"),
            # another mode of a known type (100664, written by old gits) is only a warning
            # to git, which reads it as its type; a mode of no type git knows is refused
            "badFilemode": mode not in _MODES and mode & _TYPE_BITS not in _TYPES,
            "duplicateEntries": name in names,
            "largePathname": len(name) > MAX_NAME,
        }
        found.update(msg_id for msg_id, present in flags.items() if present)
        if mode == _SYMLINK and _is_dot_file(name, b"gitmodules"):
            raise FsckError(sha, "tree", "gitmodulesSymlink", ".gitmodules is a symbolic link")
        key = name + b"/" if mode & 0o170000 == _DIR else name
        if entries and key < previous:
            found.add("treeNotSorted")
        names.add(name)
        previous = key
        entries.append(entry)
    for msg_id, message in _TREE_PROBLEMS:
        if msg_id in found:
            raise FsckError(sha, "tree", msg_id, message)
    return entries


def _is_dot_file(name: bytes, needle: bytes) -> bool:
    """Whether ``name`` is ``.`` + ``needle`` on some filesystem, also after a backslash."""
    if is_hfs_dot(name, needle) or is_ntfs_dot(name, needle):
        return True
    return any(is_ntfs_dot(part, needle) for part in name.split(b"\\")[1:])


def _headers_end(sha: bytes, kind: str, raw: bytes) -> None:
    """The header of a commit or tag ends at a blank line or with a newline, and has no NUL."""
    end = raw.find(b"\n\n")
    header = raw if end < 0 else raw[:end]
    nul = header.find(b"\0")
    if nul >= 0:
        raise FsckError(sha, kind, "nulInHeader", f"unterminated header: NUL at offset {nul}")
    if end < 0 and not raw.endswith(b"\n"):
        raise FsckError(sha, kind, "unterminatedHeader", "unterminated header")


IDENT_PROBLEMS = frozenset(
    {
        "missingNameBeforeEmail",
        "badName",
        "missingEmail",
        "missingSpaceBeforeEmail",
        "badEmail",
        "missingSpaceBeforeDate",
        "badDate",
        "zeroPaddedDate",
        "badDateOverflow",
        "badTimezone",
    }
)
"""What may be wrong with an author, committer or tagger line: git refuses all of it, and
old histories hold some of it (psf/requests has a commit in the time zone ``+051800``);
an ``ObjectChecker`` may be told to accept these, as git's ``receive.fsck.<id>=ignore``
does. Nothing else is to be accepted: the rest keeps objects readable and checkouts safe."""


def _check_ident(sha: bytes, kind: str, line: bytes, accept: frozenset[str]) -> None:
    """``Name <email> seconds +zone``, with git's message for the first thing wrong, unless
    its message id is in ``accept``."""
    try:
        _ident_problem(sha, kind, line)
    except FsckError as exc:
        if exc.msg_id not in accept:
            raise


def _ident_problem(sha: bytes, kind: str, line: bytes) -> None:
    def refuse(msg_id: str, what: str) -> FsckError:
        return FsckError(sha, kind, msg_id, f"invalid author/committer line - {what}")

    if line.startswith(b"<"):
        raise refuse("missingNameBeforeEmail", "missing space before email")
    lt = line.find(b"<")
    gt = line.find(b">")
    if lt < 0:
        raise refuse("badName" if gt >= 0 else "missingEmail", "missing email")
    if 0 <= gt < lt:
        raise refuse("badName", "bad name")
    if line[lt - 1 : lt] != b" ":
        raise refuse("missingSpaceBeforeEmail", "missing space before email")
    close = line.find(b">", lt)
    if close < 0 or b"<" in line[lt + 1 : close]:
        raise refuse("badEmail", "bad email")
    rest = line[close + 1 :]
    if not rest.startswith(b" "):
        raise refuse("missingSpaceBeforeDate", "missing space before date")
    date = rest[1:].lstrip(b" \t")
    digits = re.match(rb"[0-9]*", date)
    seconds = digits.group() if digits else b""
    if not seconds:
        raise refuse("badDate", "bad date")
    if seconds.startswith(b"0") and date[1:2] != b" ":
        raise refuse("zeroPaddedDate", "zero-padded date")
    if len(seconds) > 23 or int(seconds) >= 1 << 63:
        raise refuse("badDateOverflow", "date causes integer overflow")
    zone = date[len(seconds) :]
    if not zone.startswith(b" "):
        raise refuse("badDate", "bad date")
    if not re.fullmatch(rb" [+-][0-9]{4}", zone):
        raise refuse("badTimezone", "bad time zone")


def _lines(raw: bytes) -> list[bytes]:
    """The header lines of a commit or tag (checked by :func:`_headers_end` first)."""
    end = raw.find(b"\n\n")
    return (raw if end < 0 else raw[: end + 1]).split(b"\n")[:-1]


def check_commit(
    sha: bytes, raw: bytes, accept: frozenset[str] = frozenset()
) -> tuple[bytes, list[bytes]]:
    """The binary ids of commit ``sha``'s tree and parents once checked (problems of its
    identity lines whose ids are in ``accept`` let through)."""

    def refuse(msg_id: str, message: str) -> FsckError:
        return FsckError(sha, "commit", msg_id, message)

    _headers_end(sha, "commit", raw)
    lines = iter(_lines(raw))
    line = next(lines, None)
    if line is None or not line.startswith(b"tree "):
        raise refuse("missingTree", "invalid format - expected 'tree' line")
    if not _HEX.fullmatch(line[5:]):
        raise refuse("badTreeSha1", "invalid 'tree' line format - bad sha1")
    tree = bytes.fromhex(line[5:].decode())
    parents: list[bytes] = []
    line = next(lines, None)
    while line is not None and line.startswith(b"parent "):
        if not _HEX.fullmatch(line[7:]):
            raise refuse("badParentSha1", "invalid 'parent' line format - bad sha1")
        parents.append(bytes.fromhex(line[7:].decode()))
        line = next(lines, None)
    authors = 0
    while line is not None and line.startswith(b"author "):
        _check_ident(sha, "commit", line[7:], accept)
        authors += 1
        line = next(lines, None)
    if authors == 0:
        raise refuse("missingAuthor", "invalid format - expected 'author' line")
    if authors > 1:
        raise refuse("multipleAuthors", "invalid format - multiple 'author' lines")
    if line is None or not line.startswith(b"committer "):
        raise refuse("missingCommitter", "invalid format - expected 'committer' line")
    _check_ident(sha, "commit", line[10:], accept)
    if b"\0" in raw:
        raise refuse("nulInCommit", "NUL byte in the commit object body")
    return tree, parents


def check_tag(sha: bytes, raw: bytes, accept: frozenset[str] = frozenset()) -> tuple[bytes, int]:
    """The binary id and type of the object tag ``sha`` points at, once checked (a tag name
    git would not accept as a ref, a missing tagger and extra headers are allowed, as git
    allows them)."""

    def refuse(msg_id: str, message: str) -> FsckError:
        return FsckError(sha, "tag", msg_id, message)

    _headers_end(sha, "tag", raw)
    lines = _lines(raw)
    lines.append(b"")  # (what follows the header, for the checks on the last line)
    if not lines[0].startswith(b"object "):
        raise refuse("missingObject", "invalid format - expected 'object' line")
    if not _HEX.fullmatch(lines[0][7:]):
        raise refuse("badObjectSha1", "invalid 'object' line format - bad sha1")
    if len(lines) < 3 or not lines[1].startswith(b"type "):
        raise refuse("missingTypeEntry", "invalid format - expected 'type' line")
    kind = _TYPE_NUMS.get(lines[1][5:])
    if kind is None:
        raise refuse("badType", "invalid 'type' value")
    if len(lines) < 4 or not lines[2].startswith(b"tag "):
        raise refuse("missingTagEntry", "invalid format - expected 'tag' line")
    if lines[3].startswith(b"tagger "):  # (old tags have none)
        _check_ident(sha, "tag", lines[3][7:], accept)
    return bytes.fromhex(lines[0][7:].decode()), kind


def check_gitattributes(sha: bytes, raw: bytes) -> None:
    """A ``.gitattributes`` blob git can read: not too large, no line too long."""
    if len(raw) > MAX_GITATTRIBUTES:
        raise FsckError(sha, "blob", "gitattributesLarge", ".gitattributes too large to parse")
    text = raw.split(b"\0", 1)[0]
    if any(len(line) >= MAX_ATTRIBUTE_LINE for line in text.split(b"\n")):
        raise FsckError(
            sha, "blob", "gitattributesLineLength", ".gitattributes has too long lines to parse"
        )


def check_gitmodules(sha: bytes, raw: bytes) -> None:
    """A ``.gitmodules`` blob without disallowed submodule settings."""
    if len(raw) > MAX_GITMODULES:
        raise FsckError(sha, "blob", "gitmodulesLarge", ".gitmodules too large to parse")
    for msg_id, message in gitmodules_problems(raw):
        raise FsckError(sha, "blob", msg_id, message)


def _content_check(path: str) -> Callable[[bytes, bytes], None] | None:
    """The check fsck makes of the content of a regular file at ``path`` (its name decides:
    ``.gitmodules`` and ``.gitattributes``, in any spelling a filesystem takes for them)."""
    name = path.rsplit("/", 1)[-1].encode("utf-8", "surrogateescape")
    if _is_dot_file(name, b"gitmodules"):
        return check_gitmodules
    if _is_dot_file(name, b"gitattributes"):
        return check_gitattributes
    return None


def is_special_file(path: str) -> bool:
    """Whether fsck checks the content of a regular file at ``path`` (a path in a tree)."""
    return _content_check(path) is not None


def file_problem(path: str, content: bytes) -> FsckError | None:
    """What fsck would refuse in a regular file at ``path`` (a path in a tree) holding
    ``content``: the checks of ``.gitmodules`` and ``.gitattributes``, in any spelling a
    filesystem takes for them; ``None`` when there is nothing. The object id the error names
    is that of the blob ``content`` would be."""
    check = _content_check(path)
    if check is None:
        return None
    try:
        blob_id = hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()
        check(blob_id.encode("ascii"), content)
    except FsckError as exc:
        return exc
    return None


class ObjectChecker:
    """Checks a set of objects one at a time, then the references between them and to the
    objects already stored (:meth:`finish`)."""

    def __init__(self, accept: frozenset[str] = frozenset()) -> None:
        self.accept = accept
        """Message ids of :data:`IDENT_PROBLEMS` let through."""
        self.types: dict[bytes, int] = {}
        """Binary id -> type of each object checked."""
        self.links: dict[bytes, tuple[int, bytes]] = {}
        """Binary id -> (expected type, hex id of an object that refers to it)."""
        self.special: dict[bytes, tuple[str, bytes]] = {}
        """Blobs named ``.gitmodules`` or ``.gitattributes`` -> (which, tree's hex id)."""
        self.subtrees: dict[bytes, list[bytes]] = {}
        """Binary id of each tree checked -> binary ids of the trees directly in it."""

    def check(self, kind: int, oid: bytes, raw: bytes) -> None:
        """Check one object (binary id ``oid``); :class:`FsckError` if git would refuse it."""
        sha = oid.hex().encode("ascii")
        self.types[oid] = kind
        if kind == TREE:
            entries = check_tree(sha, raw)
            for entry in entries:
                self._tree_entry(sha, entry)
            self.subtrees[oid] = [entry.oid for entry in entries if entry.mode == _DIR]
        elif kind == COMMIT:
            tree, parents = check_commit(sha, raw, self.accept)
            self._link(tree, TREE, sha)
            for parent in parents:
                self._link(parent, COMMIT, sha)
        elif kind == TAG:
            target, target_kind = check_tag(sha, raw, self.accept)
            self._link(target, target_kind, sha)
        elif kind != BLOB:
            raise FsckError(sha, "object", "unknownType", f"unknown type '{kind}'")

    def _tree_entry(self, sha: bytes, entry: TreeEntry) -> None:
        if entry.mode != _GITLINK:  # (a submodule's commit is in another repository)
            self._link(entry.oid, TREE if entry.mode == _DIR else BLOB, sha)
        if entry.mode == _SYMLINK:
            return
        if _is_dot_file(entry.name, b"gitmodules"):
            self.special[entry.oid] = (".gitmodules", sha)
        elif _is_dot_file(entry.name, b"gitattributes"):
            self.special[entry.oid] = (".gitattributes", sha)

    def _link(self, oid: bytes, kind: int, source: bytes) -> None:
        self.links.setdefault(oid, (kind, source))

    def finish(
        self,
        stored_type: Callable[[bytes], int | None],
        read_blob: Callable[[bytes], bytes | None],
    ) -> None:
        """Check every reference: to an object checked here, or else to a stored one
        (``stored_type(binary id)``: its type, None if missing); then the special blobs
        (``read_blob(binary id)``: its content, None if missing or not a blob)."""
        for oid, (kind, source) in self.links.items():
            found = self.types.get(oid)
            if found is None:
                found = stored_type(oid)
            if found != kind:
                what = "missing" if found is None else TYPE_NAMES.get(found, str(found))
                raise FsckError(
                    source,
                    "object",
                    "brokenLink",
                    f"refers to {TYPE_NAMES[kind]} {oid.hex()}, which is {what}",
                )
        for oid, (which, _tree) in self.special.items():
            raw = read_blob(oid)
            sha = oid.hex().encode("ascii")
            if raw is None:
                msg_id = "gitmodulesBlob" if which == ".gitmodules" else "gitattributesBlob"
                raise FsckError(sha, "blob", msg_id, f"non-blob found at {which}")
            if which == ".gitmodules":
                check_gitmodules(sha, raw)
            else:
                check_gitattributes(sha, raw)
