"""Three-way merge planning: what merging one commit into another would change, and where.

A plan is git's merge (``git merge-tree --write-tree``, the ``ort`` strategy) worked out in
memory: the merge bases found and ordered as git finds them (:mod:`gitsync.merge.merge_base`),
the trees merged with git's rules, renames and directory renames included
(:mod:`gitsync.merge.tree_merge`), files merged line by line with git's histogram diff and
merge rules (:mod:`gitsync.merge.xdiff`, :mod:`gitsync.merge.xmerge`). Its files are the paths
of the target whose content changes, and the conflicted paths, each with the contents on all
sides; its conflicted paths are git's, and its tree, conflict markers included, is git's. When
the two commits have several best common ancestors, the base is virtual: those ancestors merged
into each other, oldest first, as git's recursive merge builds it. Nothing is written and no ref
moves; the cost follows the number of changed paths, not the size of the repository.

Why not ``dulwich.merge`` (1.2.21): on the 1,679 two-parent merges of psf/requests' history
its ``recursive_merge`` gives git's tree and conflicted paths for 1,594 (it follows no
renames, and merges lines with ``merge3``, which does not align them as git's histogram
diff does); it writes markers without the branches' names, and into binary files; it leaves
out of the tree a file the target deleted and the source changed, and reports conflicts for
a mode changed on one side and the content on the other and for a file that became a
directory on one side; its virtual base of a criss-cross merge is built without the bases'
own common ancestor. It also writes the merged objects to the store, where a plan writes
nothing.
"""

from __future__ import annotations

import difflib
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import AnyStr, Literal

from dulwich.objects import S_ISGITLINK, Blob, ObjectID, ShaFile, Tree
from dulwich.repo import Repo

from ..objects.commits import BlobEntry, edit_tree
from ..packs.read import ObjectReader
from .merge_base import CommitGraph, merge_bases
from .tree_merge import Entry, Merged, Reader, TreeMerge, is_git_binary
from .xmerge import merge_lines, merge_resolving

__all__ = [
    "BINARY_SNIFF",
    "DIFF_INPUT_LIMIT",
    "FileMerge",
    "MergeConflict",
    "MergePlan",
    "UnrelatedHistories",
    "is_binary",
    "merge_base",
    "merge_text",
    "merged_tree",
    "plan_merge",
    "resolve_plan",
]

BINARY_SNIFF = 8000
"""A NUL byte in this many leading bytes marks a file as binary, as git decides."""

DIFF_INPUT_LIMIT = 4 * 1024 * 1024
"""Bytes of a file's version from which a preview names the file changed without a diff."""

Status = Literal["added", "modified", "deleted", "conflict"]
VIRTUAL_LABELS = ("Temporary merge branch 1", "Temporary merge branch 2")


class UnrelatedHistories(Exception):
    """The two commits have no common ancestor."""


class MergeConflict(Exception):
    """A plan with conflicts was resolved without conflict markers."""

    def __init__(self, paths: Sequence[str]) -> None:
        super().__init__(f"merge conflicts in {', '.join(paths)}")
        self.paths = list(paths)


def is_binary(data: bytes | None) -> bool:
    """Whether ``data`` is not text that can be edited live: a NUL in its first 8000 bytes,
    or not UTF-8. (git merges a file by line unless it has a NUL there.)"""
    if data is None:
        return False
    if b"\0" in data[:BINARY_SNIFF]:
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


class FileMerge:
    """One path of a plan: what the target has there (``ours``), what the merge puts there
    (``merged``; None: nothing), and the versions it merged: ``base`` and ``theirs`` (the
    source's), each possibly from another path when a side renamed the file.

    ``status`` is ``conflict`` for a conflicted path (its ``merged`` is what git records:
    the text with conflict markers, the target's version of a binary file, the modified
    version of a file the other side deleted; a file in the way of a directory is moved
    to ``path~branch``), else ``added``, ``deleted`` or ``modified``. ``renamed_from`` is
    the target's path of a file the source renamed to ``path``. Contents are read from the
    object store when first asked for.
    """

    __slots__ = (
        "_reader",
        "_stages",
        "_target",
        "mode",
        "path",
        "renamed_from",
        "result",
        "status",
    )

    def __init__(
        self,
        path: str,
        status: Status,
        stages: tuple[Entry | None, Entry | None, Entry | None],
        reader: Reader,
        *,
        target: Entry | None,
        result: Entry | None,
        renamed_from: str | None = None,
    ) -> None:
        self.path = path
        self.status = status
        self._stages = stages  # base, ours, theirs: the versions merged here
        self._reader = reader
        self._target = target  # what the target has at this path
        self.result = result
        self.mode = None if result is None else result[0]
        self.renamed_from = renamed_from

    def __repr__(self) -> str:
        return f"FileMerge({self.path!r}, {self.status!r})"

    def _blob(self, entry: Entry | None) -> bytes | None:
        if entry is None or S_ISGITLINK(entry[0]) or stat.S_ISDIR(entry[0]):
            return None
        return self._reader.raw(entry[1])

    @property
    def entries(self) -> tuple[Entry | None, Entry | None, Entry | None]:
        """The (mode, blob id) of the versions merged: base, ours, theirs (None: absent)."""
        return self._stages

    @property
    def base(self) -> bytes | None:
        return self._blob(self._stages[0])

    @property
    def ours(self) -> bytes | None:
        """The target's content at this path (None: no file here)."""
        return self._blob(self._target)

    @property
    def theirs(self) -> bytes | None:
        return self._blob(self._stages[2])

    @property
    def merged(self) -> bytes | None:
        return self._blob(self.result)

    @property
    def keeps_ours(self) -> bool:
        """Whether the target's version stays as it is."""
        return self.result == self._target

    @property
    def binary(self) -> bool:
        """Whether git merges this file whole, not by line: a NUL in the first 8000 bytes of
        a version, or a symlink or submodule."""
        for entry in (*self._stages, self._target, self.result):
            if entry is not None and not stat.S_ISREG(entry[0]):
                return True
        return any(
            data is not None and is_git_binary(data) for data in (self.base, self.ours, self.theirs)
        )

    def change(self) -> BlobEntry | None:
        """What the target's path becomes in a commit: a blob with its mode, or None."""
        if self.result is None:
            return None
        mode, sha = self.result
        return BlobEntry(mode, sha, self._reader.virtual.get(sha))

    def diff(self, limit: int | None = None) -> str:
        """Unified diff from the target's version (of ``renamed_from`` for a renamed file)
        to ``merged``, cut at ``limit`` characters; a one-line note for binary files, and
        for files over :data:`DIFF_INPUT_LIMIT` bytes (a diff of those would take seconds
        and gigabytes to make)."""
        old_path = self.renamed_from or self.path
        if self.binary:
            return f"Binary files a/{old_path} and b/{self.path} differ\n"
        before = self._blob(self._stages[1]) if self.renamed_from else self.ours
        merged = self.merged
        sizes = (len(before or b""), len(merged or b""))
        if max(sizes) > DIFF_INPUT_LIMIT:
            return (
                f"Large files a/{old_path} and b/{self.path} differ ({sizes[0]} and "
                f"{sizes[1]} bytes; too large to show)\n"
            )
        lines = difflib.unified_diff(
            _lines(before),
            _lines(merged),
            "/dev/null" if before is None else f"a/{old_path}",
            "/dev/null" if merged is None else f"b/{self.path}",
        )
        if limit is None:
            return "".join(lines)
        out: list[str] = []
        size = 0
        for line in lines:
            out.append(line)
            size += len(line)
            if size >= limit:
                break
        return "".join(out)[:limit]


def _lines(data: bytes | None) -> list[str]:
    lines = (data or b"").decode("utf-8", "replace").splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n\\ No newline at end of file\n"
    return lines


@dataclass(slots=True)
class MergePlan:
    """What merging ``source`` into ``target`` changes on the target."""

    source: bytes
    target: bytes
    base: bytes | None
    """The merge base; None when it is virtual (several best common ancestors merged)."""
    files: list[FileMerge] = field(default_factory=list)
    up_to_date: bool = False
    fast_forward: bool = False
    reader: Reader | None = field(default=None, repr=False, compare=False)
    """Where the plan read its objects (and holds the merged ones), for :func:`merged_tree`."""
    target_tree: bytes | None = field(default=None, repr=False, compare=False)

    @property
    def conflicts(self) -> list[str]:
        """Paths of the files in conflict."""
        return [f.path for f in self.files if f.status == "conflict"]


def merge_base(repo: Repo, a: bytes, b: bytes) -> bytes | None:
    """A best common ancestor of commits ``a`` and ``b`` (the newest, if there are several)."""
    objects = ObjectReader(repo.object_store)
    try:
        bases = merge_bases(_graph(repo, objects), a, [b])
    finally:
        objects.close()
    return bases[0] if bases else None


def merge_text(
    base: str,
    ours: str,
    theirs: str,
    *,
    labels: tuple[str, str] = ("ours", "theirs"),
    newline: str = "\n",
    characters: bool = False,
) -> tuple[str, bool]:
    """Merge two edits of ``base`` line by line, as git merges a file; return (merged text,
    whether it conflicts).

    Edits apart are all kept; lines changed differently on both sides, or where both sides
    insert at the same place, are put between ``<<<<<<< ours`` / ``=======`` / ``>>>>>>>
    theirs`` markers (git's layout, ``labels`` naming the sides). Lines end at ``newline``
    (git's ``"\\n"``, which CRLF lines end in too).

    ``characters``: lines both sides changed are merged character by character first, as
    live typing merges (one side typed at the end of a line the other changed at its
    start: both are kept), and what both inserted at one place (lines, or characters) is
    kept, ours first; the text is merged line by line, markers and all, if a region
    conflicts character by character too, or if the regions hold more than
    ``CHARACTER_MERGE_MAX`` characters in all.
    """
    base_lines, our_lines, their_lines = (_split(t, newline) for t in (base, ours, theirs))
    lines, conflicts = merge_lines(base_lines, our_lines, their_lines, labels, newline)
    if conflicts and characters:
        finer = merge_resolving(base_lines, our_lines, their_lines, _CharacterMerge())
        if finer is not None:
            return "".join(finer), False
    return "".join(lines), conflicts > 0


CHARACTER_MERGE_MAX = 2_000
"""The most characters (the three sides' together, every region's) merged character by
character in one :func:`merge_text`: a diff of characters takes a step per character, and
live documents are merged on the event loop (2,000 take up to 50 ms on a busy machine)."""


class _CharacterMerge:
    """Merges the regions of one text character by character, within
    ``CHARACTER_MERGE_MAX`` characters in all."""

    def __init__(self) -> None:
        self.left = CHARACTER_MERGE_MAX

    def __call__(
        self, base: Sequence[str], ours: Sequence[str], theirs: Sequence[str]
    ) -> list[str] | None:
        """The lines of one region merged; ``None`` if they conflict, or are too many.
        Lines both sides inserted at one place are both kept, ours first, as live typing
        keeps two insertions at one place."""
        if not base:
            return _both_inserted(base, ours, theirs)
        b, o, t = "".join(base), "".join(ours), "".join(theirs)
        self.left -= len(b) + len(o) + len(t)
        if self.left < 0:
            return None
        merged, conflicts = merge_lines(list(b), list(o), list(t), ("", ""), "\n")
        if not conflicts:
            return ["".join(merged)]
        inserted = merge_resolving(list(b), list(o), list(t), _both_inserted)
        return None if inserted is None else ["".join(inserted)]


def _both_inserted(
    base: Sequence[str], ours: Sequence[str], theirs: Sequence[str]
) -> list[str] | None:
    """Both sides' insertions at one place, ours first; ``None`` if they changed more. An
    insertion that holds the other's already (typed on from it) is kept alone: the same
    text is not put in twice."""
    if base:
        return None
    our_text, their_text = "".join(ours), "".join(theirs)
    if their_text in our_text:
        return list(ours)
    if our_text in their_text:
        return list(theirs)
    return [*ours, *theirs]


def _split(text: AnyStr, newline: AnyStr) -> list[AnyStr]:
    """Lines of ``text``, each with its newline; a last line without one is kept as it is."""
    parts = text.split(newline)
    lines = [part + newline for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def _graph(repo: Repo, objects: ObjectReader) -> CommitGraph:
    shallow = repo.get_shallow()
    return CommitGraph(objects.raw, (bytes(s) for s in shallow))


def _tree_of(reader: Reader, commits: dict[bytes, bytes | None], sha: bytes) -> bytes | None:
    found = commits.get(sha, b"")
    if found != b"":
        return found
    raw = reader.raw(sha)
    if not raw.startswith(b"tree "):
        raise ValueError(f"{sha[:12].decode()} is not a commit")
    commits[sha] = tree = raw[5:45]
    return tree


def plan_merge(
    repo: Repo, source: bytes, target: bytes, *, labels: tuple[str, str] = ("ours", "theirs")
) -> MergePlan:
    """Plan merging commit ``source`` into commit ``target``; ``labels`` name them (target
    first) in conflict markers and in ``path~label``, as branch names do for git.

    Raises :class:`UnrelatedHistories` if they have no common ancestor.
    """
    # the reader stays open: the plan's contents are read from it when asked for
    return _plan(repo, ObjectReader(repo.object_store), source, target, labels)


def _plan(
    repo: Repo, objects: ObjectReader, source: bytes, target: bytes, labels: tuple[str, str]
) -> MergePlan:
    reader = Reader(objects)
    commits: dict[bytes, bytes | None] = {}
    source_tree = _tree_of(reader, commits, source)
    target_tree = _tree_of(reader, commits, target)
    if source == target:
        return MergePlan(
            source, target, source, up_to_date=True, reader=reader, target_tree=target_tree
        )
    graph = _graph(repo, objects)
    bases = merge_bases(graph, target, [source])
    if not bases:
        raise UnrelatedHistories(
            f"{source[:12].decode()} and {target[:12].decode()} share no history"
        )
    if source in bases:
        return MergePlan(
            source, target, source, up_to_date=True, reader=reader, target_tree=target_tree
        )
    if target in bases:
        merged = TreeMerge(reader, labels).merge(target_tree, target_tree, source_tree)
        files = _files(reader, merged)
        return MergePlan(
            source,
            target,
            target,
            files,
            fast_forward=True,
            reader=reader,
            target_tree=target_tree,
        )
    merged = _merge(reader, graph, commits, target, source, labels, 0, bases)
    base = bases[0] if len(bases) == 1 else None
    return MergePlan(
        source, target, base, _files(reader, merged), reader=reader, target_tree=target_tree
    )


def _merge(
    reader: Reader,
    graph: CommitGraph,
    commits: dict[bytes, bytes | None],
    ours: bytes,
    theirs: bytes,
    labels: tuple[str, str],
    depth: int,
    bases: list[bytes] | None = None,
) -> Merged:
    """git's ``merge_ort_internal``: the merge bases (oldest first) merged into one virtual
    base, each inner merge labelled "Temporary merge branch 1/2", then ``theirs`` merged into
    ``ours`` from it."""
    if bases is None:
        bases = merge_bases(graph, ours, [theirs])
    ordered = list(reversed(bases))
    if not ordered:
        base_tree: bytes | None = None
    else:
        merged_base = ordered[0]
        base_tree = _tree_of(reader, commits, merged_base)
        for other in ordered[1:]:
            inner = _merge(reader, graph, commits, merged_base, other, VIRTUAL_LABELS, depth + 1)
            base_tree = _apply(reader, inner.ours_tree, inner.changes)
            merged_base = graph.add_virtual([merged_base, other])
            commits[merged_base] = base_tree
    return TreeMerge(reader, labels, depth).merge(
        base_tree, _tree_of(reader, commits, ours), _tree_of(reader, commits, theirs)
    )


def _apply(reader: Reader, tree: bytes | None, changes: dict[str, Entry | None]) -> bytes | None:
    """Tree ``tree`` with ``changes`` (path -> entry, None removes) made, as a tree held by
    ``reader`` (never stored); None when it ends up empty."""
    nested = {path.encode("utf-8", "surrogateescape"): entry for path, entry in changes.items()}
    return _build(reader, tree, nested, [])


def _files(reader: Reader, merged: Merged) -> list[FileMerge]:
    """The plan's files: every path whose content changes, and every conflicted path."""
    conflicts = set(merged.conflicts)
    out = []
    for path in sorted(merged.changes.keys() | conflicts):
        before = reader.lookup(merged.ours_tree, path)
        if before is not None and stat.S_ISDIR(before[0]):
            before = None
        result = merged.changes.get(path, before)
        info = merged.infos.get(path)
        stages: tuple[Entry | None, Entry | None, Entry | None] = (
            (info.stages[0], info.stages[1], info.stages[2])
            if info is not None
            else (None, None, None)
        )
        status: Status = (
            "conflict"
            if path in conflicts
            else "added"
            if before is None
            else "deleted"
            if result is None
            else "modified"
        )
        out.append(
            FileMerge(
                path,
                status,
                stages,
                reader,
                target=before,
                result=result,
                renamed_from=merged.renamed.get(path),
            )
        )
    return out


def merged_tree(
    plan: MergePlan, changes: Mapping[str, BlobEntry | None]
) -> tuple[bytes, list[ShaFile]]:
    """The target's tree with ``changes`` (from :func:`resolve_plan`) made, built from the
    trees the plan read: its id, and the objects it needs that the store does not hold yet
    (new contents, rewritten trees), for :func:`gitsync.objects.commits.write_objects`."""
    reader = plan.reader
    if reader is None:
        raise ValueError("the plan holds no reader")
    made: list[bytes] = []
    nested = {path.encode("utf-8", "surrogateescape"): entry for path, entry in changes.items()}
    tree = _build(reader, plan.target_tree, nested, made)
    objects: list[ShaFile] = []
    for entry in changes.values():
        if entry is not None and entry.data is not None and not reader.stored(entry.sha):
            objects.append(Blob.from_string(entry.data))
    if tree is None:
        objects.append(Tree())
        return bytes(Tree().id), objects
    objects += [
        Tree.from_raw_string(Tree.type_num, reader.virtual[sha], sha=ObjectID(sha))
        for sha in dict.fromkeys(made)
        if not reader.stored(sha)
    ]
    return tree, objects


def _build(
    reader: Reader,
    tree: bytes | None,
    changes: Mapping[bytes, BlobEntry | Entry | None],
    made: list[bytes],
) -> bytes | None:
    """Tree ``tree`` with ``changes`` (path -> entry, None removes) made; the id of each tree
    written (held by ``reader``) is added to ``made``. None when the tree ends up empty."""
    here: dict[bytes, Entry | None] = {}
    below: dict[bytes, dict[bytes, BlobEntry | Entry | None]] = {}
    for path, change in changes.items():
        name, sep, rest = path.partition(b"/")
        if sep:
            below.setdefault(name, {})[rest] = change
        elif isinstance(change, BlobEntry):
            here[name] = (change.mode, change.sha)
        else:
            here[name] = change
    entries = reader.tree(tree)[0] if tree else {}
    for name, sub in below.items():
        entry = entries.get(name.decode("utf-8", "surrogateescape"))
        old = entry[1] if entry is not None and stat.S_ISDIR(entry[0]) else None
        new = _build(reader, old, sub, made)
        if new is not None or here.get(name) is None:
            here[name] = None if new is None else (stat.S_IFDIR, new)
    if tree is not None and all(
        entries.get(name.decode("utf-8", "surrogateescape")) == entry
        for name, entry in here.items()
    ):
        return tree
    raw = edit_tree(reader.raw(tree) if tree else b"", here)
    if not raw:
        return None
    sha = reader.keep(b"tree", raw)
    made.append(sha)
    return sha


def resolve_plan(plan: MergePlan, *, markers: bool) -> dict[str, BlobEntry | None]:
    """The changes (path -> blob and mode, None deletes) that apply ``plan`` to its target,
    for :func:`gitsync.objects.commits.commit_changes`: git's merged tree.

    With ``markers``, conflicted paths get what git records for them (text files with
    conflict markers); without, conflicts raise :class:`MergeConflict`.
    """
    if plan.conflicts and not markers:
        raise MergeConflict(plan.conflicts)
    return {f.path: f.change() for f in plan.files if not f.keeps_ours}
