"""Three-way merges of trees as git's ``ort`` strategy makes them, renames included.

The three trees (the merge base, ours = the target, theirs = the source) are walked together,
skipping what all three share. Every path where they differ gets a record of its three
versions. Renames are then found on each side (:mod:`gitsync.merge.renames`), and directories one
side renamed carry along what the other side added in them (reported as a conflict, as git's
default ``merge.directoryRenames=conflict`` does). Renames move records: a file renamed on one
side and edited on the other is merged at its new path; renamed on both sides to different
paths, or renamed on one and deleted on the other, it is a conflict. Each path is then
resolved, children before their directory, with git's rules: content merges
(:mod:`gitsync.merge.xmerge`, as the ``merge`` attributes of ours say:
:mod:`gitsync.merge.attributes`), modify/delete conflicts keeping the modified file, a file
in the way of a directory moved aside to ``path~branch``, two different kinds of entry (file,
symlink, submodule) moved apart. The result is the files that differ from ours, and the conflicted
paths exactly as ``git merge-tree --name-only`` lists them.

Where git's own code is organised around an index and a work tree, this keeps only what a
merge decides; the names of git's functions are given where each rule comes from.
"""

from __future__ import annotations

import bisect
import hashlib
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field

from dulwich.objects import S_ISGITLINK, parse_tree

from ..packs.read import ObjectReader
from .attributes import MergeAttributes
from .renames import (
    RELEVANT_CONTENT,
    RELEVANT_LOCATION,
    DirRelevance,
    File,
    detect_renames,
    hashmap_order,
)
from .xmerge import MARKER_SIZE, merge_lines

__all__ = ["EMPTY_BLOB", "Entry", "Merged", "Reader", "TreeMerge", "is_git_binary"]

Entry = tuple[int, bytes]
"""(mode, hex id) of a tree entry."""
_Walk = tuple[list[bytes | None], str, int]
"""A directory of the three sides to walk: their trees (None: not a tree there), its path,
the mask its entries are walked with."""
EMPTY_BLOB = b"e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
BINARY_SNIFF = 8000
_IFMT = 0o170000


def is_git_binary(data: bytes) -> bool:
    """git's test for content it will not merge by line: a NUL in the first 8000 bytes."""
    return b"\0" in data[:BINARY_SNIFF]


class Reader:
    """Object reads for one merge: raw reads from the packs, parsed trees kept, and the
    objects a merge makes (merged blobs, virtual bases' trees), which are never stored."""

    def __init__(self, objects: ObjectReader) -> None:
        self.objects = objects
        self.trees: dict[bytes, tuple[dict[str, Entry], frozenset[tuple[bytes, int, bytes]]]] = {}
        self.virtual: dict[bytes, bytes] = {}

    def raw(self, sha: bytes) -> bytes:
        found = self.virtual.get(sha)
        return found if found is not None else self.objects.raw(sha)

    def tree(self, sha: bytes) -> tuple[dict[str, Entry], frozenset[tuple[bytes, int, bytes]]]:
        """Tree ``sha``'s entries by name, and as a set of (name, mode, id)."""
        found = self.trees.get(sha)
        if found is None:
            listed = parse_tree(self.raw(sha), 20)
            by_name = {  # in the tree's own order
                name.decode("utf-8", "surrogateescape"): (mode, bytes(hexsha))
                for name, mode, hexsha in listed
            }
            found = self.trees[sha] = (by_name, frozenset(listed))
        return found

    def blob(self, entry: Entry | None) -> bytes:
        """A file's content (b"" when absent, and for a submodule)."""
        if entry is None or S_ISGITLINK(entry[0]):
            return b""
        return self.raw(entry[1])

    def keep(self, type_name: bytes, raw: bytes) -> bytes:
        """Hold an object made by the merge; return its id."""
        sha = hashlib.sha1(b"%s %d\0" % (type_name, len(raw)) + raw).hexdigest().encode()
        self.virtual[sha] = raw
        return sha

    def stored(self, sha: bytes) -> bool:
        """Whether the store holds object ``sha`` (in a pack the reader has open, or loose)."""
        return self.objects.has(sha)

    def lookup(self, tree: bytes | None, path: str) -> Entry | None:
        """The entry at ``path`` in tree ``tree`` (None when absent)."""
        entry: Entry | None = None if tree is None else (stat.S_IFDIR, tree)
        for part in path.split("/"):
            if entry is None or not stat.S_ISDIR(entry[0]):
                return None
            entry = self.tree(entry[1])[0].get(part)
        return entry

    def files(self, prefix: str, entry: Entry | None) -> Iterator[tuple[str, Entry]]:
        """Every file at or below ``prefix`` in ``entry`` (a tree, a file, or None), depth
        first in each tree's order; with a stack of its own, not recursion (a tree may nest
        thousands deep)."""
        stack = [] if entry is None else [(prefix, entry)]
        while stack:
            path, item = stack.pop()
            if not stat.S_ISDIR(item[0]):
                yield path, item
                continue
            subs = self.tree(item[1])[0].items()
            stack.extend((f"{path}/{name}", sub) for name, sub in reversed(subs))


@dataclass(eq=False, slots=True)
class Info:
    """What a merge knows about one path (git's ``conflict_info``/``merged_info``).

    ``stages`` are the base's, ours' and theirs' entries (None: absent or a directory),
    ``pathnames`` where each came from (renames make them differ from ``path``),
    ``filemask``/``dirmask`` which of the three have a file/a directory here. ``result``
    is what the merge puts here (None: nothing), ``clean`` whether that is settled.
    """

    path: str
    stages: list[Entry | None]
    pathnames: list[str]
    filemask: int = 0
    dirmask: int = 0
    match_mask: int = 0
    df_conflict: bool = False
    path_conflict: bool = False
    clean: bool = False
    result: Entry | None = None
    is_null: bool = False
    resolved_dir: bool = False
    """Settled whole at the directory level: ``result`` is a tree (or a file, or None)."""
    directory: str = ""

    def copy(self) -> Info:
        return Info(
            self.path,
            list(self.stages),
            list(self.pathnames),
            self.filemask,
            self.dirmask,
            self.match_mask,
            self.df_conflict,
            self.path_conflict,
            self.clean,
            self.result,
            self.is_null,
            self.resolved_dir,
            self.directory,
        )


@dataclass(slots=True)
class Merged:
    """The outcome of a tree merge: every file that differs from ours (path -> new entry or
    None), the records behind them, and the conflicted paths (sorted)."""

    changes: dict[str, Entry | None]
    infos: dict[str, Info]
    conflicts: list[str]
    ours_tree: bytes | None
    renamed: dict[str, str] = field(default_factory=dict)
    """New path -> old path, for files our side had under another name."""


def _dirname(path: str) -> str:
    at = path.rfind("/")
    return path[:at] if at >= 0 else ""


def _is_dir(entry: Entry | None) -> bool:
    return entry is not None and stat.S_ISDIR(entry[0])


def _walk_order(names: set[str], trees: tuple[dict[str, Entry], ...]) -> list[str]:
    """``names`` in the order git's ``traverse_trees`` meets them in the three trees.

    Each tree lists a directory as if its name ended in ``/``; git walks the three lists
    together, taking the smallest name (plainly compared) among their next entries, and
    looks ahead in a list for a directory "hiding" behind names that extend it with a
    character below ``/`` ("t" behind "t-2"). Without such a directory, that is plain
    name order."""
    ordered = sorted(names)
    dirs = {name for tree in trees for name, entry in tree.items() if stat.S_ISDIR(entry[0])}
    if not dirs:
        return ordered
    everything = sorted({name for tree in trees for name in tree})
    for name in dirs:  # is a name "name" + a character below "/" there too?
        following = bisect.bisect_right(everything, name)
        if following < len(everything) and name < everything[following] < name + "/":
            break
    else:
        return ordered
    streams = [list(tree) for tree in trees]
    at = [0, 0, 0]
    taken: list[set[str]] = [set(), set(), set()]
    out = []
    while True:
        heads: list[str | None] = []
        for t, stream in enumerate(streams):
            while at[t] < len(stream) and stream[at[t]] in taken[t]:
                at[t] += 1
            heads.append(stream[at[t]] if at[t] < len(stream) else None)
        present = [head for head in heads if head is not None]
        if not present:
            break
        first = min(present, key=lambda name: name.encode("utf-8", "surrogateescape"))
        if first in names:
            out.append(first)
        for t, stream in enumerate(streams):
            if heads[t] == first:
                at[t] += 1
            elif heads[t] is not None and _may_hide(first, heads[t]):  # type: ignore[arg-type]
                for later in stream[at[t] + 1 :]:
                    if later == first:
                        taken[t].add(first)  # met early; skipped when reached
                        break
                    if not _may_hide(first, later):
                        break
    return out


def _may_hide(first: str, name: str) -> bool:
    """Whether ``first`` may still come after ``name`` in a tree (check_entry_match):
    ``name`` sorts before it, or extends it with a character below ``/``."""
    if name.encode("utf-8", "surrogateescape") < first.encode("utf-8", "surrogateescape"):
        return True
    return len(name) > len(first) and name.startswith(first) and name[len(first)] < "/"


def _children_last(path: str) -> str:
    """Sort key putting a directory just before what it holds (git's
    ``sort_dirs_next_to_their_children``: as if every path ended in ``/``)."""
    return path + "/"


class TreeMerge:
    """One merge of three trees (``merge_ort_nonrecursive_internal``); ``labels`` name ours
    and theirs (branch names, for conflict markers and ``path~branch``), ``depth`` is how
    deep inside the building of a virtual merge base this merge is (0: the real merge)."""

    def __init__(self, reader: Reader, labels: tuple[str, str], depth: int = 0) -> None:
        self.reader = reader
        self.labels = labels
        self.depth = depth
        self.paths: dict[str, Info] = {}
        self.static: dict[str, int] = {}  # directory -> entries all three sides share
        self.pairs: dict[int, list[tuple[str, str, Entry]]] = {1: [], 2: []}  # (kind, path, e)
        self.relevant: dict[int, dict[str, int]] = {1: {}, 2: {}}
        self.dirs_removed: dict[int, dict[str, int]] = {1: {}, 2: {}}
        self.deferred: dict[int, dict[str, int]] = {1: {}, 2: {}}
        self.trivial_ok = {1: True, 2: True}
        self.conflicted: dict[str, Info] = {}
        self.reported: dict[int, set[str]] = {1: set(), 2: set()}
        self.shared: dict[str, frozenset[str]] = {}  # names all three sides share, by directory
        self.touched: set[str] = set()
        self.trees: tuple[bytes | None, bytes | None, bytes | None] = (None, None, None)
        self._attributes: MergeAttributes | None = None

    # -- collecting (collect_merge_info) ------------------------------------------------

    def merge(self, base: bytes | None, ours: bytes | None, theirs: bytes | None) -> Merged:
        self.trees = (base, ours, theirs)
        self._walk([base, ours, theirs], "", 0)
        self._handle_deferred()
        self._renames()
        self._process()
        return self._outcome()

    def _entries(
        self, tree: bytes | None
    ) -> tuple[dict[str, Entry], frozenset[tuple[bytes, int, bytes]]]:
        if tree is None:
            return {}, frozenset()
        return self.reader.tree(tree)

    def _walk(self, trees: list[bytes | None], directory: str, mask: int) -> None:
        """Record every entry of the three directories that the three do not share, and of
        the directories below them it must look into, depth first in git's order; with a
        stack of its own, not recursion (a tree may nest thousands deep)."""
        stack = [self._directory(trees, directory, mask)]
        while stack:
            below = next(stack[-1], None)
            if below is None:
                stack.pop()
            else:
                stack.append(self._directory(*below))

    def _directory(self, trees: list[bytes | None], directory: str, mask: int) -> Iterator[_Walk]:
        """Record the entries of one directory of the three; yield each directory below that
        must be walked, when it must be (before the entries after it)."""
        (e0, s0), (e1, s1), (e2, s2) = (self._entries(t) for t in trees)
        shared = s0 & s1 & s2
        if shared:
            self.static[directory] = len(shared)
            self.shared[directory] = frozenset(
                name.decode("utf-8", "surrogateescape") for name, _, _ in shared
            )
        differ = {name.decode("utf-8", "surrogateescape") for name, _, _ in (s0 | s1 | s2) - shared}
        names = _walk_order(differ, (e0, e1, e2))
        rows = [(name, [e0.get(name), e1.get(name), e2.get(name)]) for name in names]
        if mask in (2, 4):  # traverse_trees_wrapper: a file added here on the side keeping it?
            for _, entries in rows:
                filemask = sum(1 << i for i, e in enumerate(entries) if e and not _is_dir(e))
                if filemask and filemask == mask:
                    mask = 7
                    break
        for name, entries in rows:
            below = self._entry(name, entries, directory, mask)
            if below is not None:
                yield below

    def _entry(
        self, name: str, names: list[Entry | None], directory: str, mask: int
    ) -> _Walk | None:
        """collect_merge_info_callback for one name of a directory; the directory below to
        walk next, if any."""
        path = f"{directory}/{name}" if directory else name
        filemask = dirmask = 0
        for i, e in enumerate(names):
            if e is not None:
                if stat.S_ISDIR(e[0]):
                    dirmask |= 1 << i
                else:
                    filemask |= 1 << i
        base, one, two = names
        side1_matches = base is not None and one == base
        side2_matches = base is not None and two == base
        sides_match = one is not None and one == two
        match_mask = (
            7
            if side1_matches and side2_matches
            else 3
            if side1_matches
            else (5 if side2_matches else 6 if sides_match else 0)
        )
        self.touched.add(path)
        stages = [None if _is_dir(e) else e for e in names]
        if side1_matches and side2_matches:
            self.paths[path] = self._resolved(path, directory, base, stages)
            return None
        if filemask == 7 and (sides_match or side2_matches):
            self.paths[path] = self._resolved(path, directory, one, stages)
            return None
        if filemask == 7 and side1_matches:
            self.paths[path] = self._resolved(path, directory, two, stages)
            return None
        child_mask = self._rename_info(names, directory, path, filemask, dirmask, match_mask, mask)
        info = Info(
            path,
            stages,
            [path, path, path],
            filemask=filemask,
            dirmask=dirmask,
            match_mask=match_mask,
            df_conflict=bool(filemask and dirmask),
            directory=directory,
        )
        if dirmask:
            info.is_null = True
            # keep the directory versions too: a deferred directory resolves to one of them
            info.stages = list(names)
            self.paths[path] = info
            side = 2 if side1_matches else 1 if side2_matches else 0
            if filemask == 0 and dirmask in (2, 4):
                info.match_mask = 7 - dirmask
                side = dirmask // 2
            if child_mask != 7 and side and self.trivial_ok[side]:
                self.deferred[side][path] = child_mask
                return None
            info.match_mask &= filemask
            info.stages = stages
            return (
                [e[1] if _is_dir(e) else None for e in names],  # type: ignore[index]
                path,
                child_mask,
            )
        self.paths[path] = info
        return None

    def _resolved(
        self, path: str, directory: str, entry: Entry | None, stages: list[Entry | None]
    ) -> Info:
        return Info(
            path,
            stages,
            [path, path, path],
            clean=True,
            result=entry,
            is_null=entry is None,
            resolved_dir=_is_dir(entry),
            directory=directory,
        )

    def _rename_info(
        self,
        names: list[Entry | None],
        directory: str,
        path: str,
        filemask: int,
        dirmask: int,
        match_mask: int,
        mask: int,
    ) -> int:
        """collect_rename_info: the rename sources and destinations this entry gives each
        side, and the directories a side removed; returns the directory rename mask for
        what lies below."""
        if mask != 7 and dirmask in (3, 5):
            mask = dirmask & ~1
        if dirmask in (1, 3, 5):
            sides = (7 - dirmask) // 2
            relevance = DirRelevance.FOR_ANCESTOR if mask == 7 else DirRelevance.NOT_RELEVANT
            if sides & 1:
                self.dirs_removed[1][path] = relevance
            if sides & 2:
                self.dirs_removed[2][path] = relevance
        if mask == 7 and filemask in (2, 4):
            self.dirs_removed[3 - (filemask >> 1)][directory] = DirRelevance.FOR_SELF
        if filemask in (0, 7):
            return mask
        for side in (1, 2):
            bit = 1 << side
            if filemask & 1 and not filemask & bit:
                base = names[0]
                assert base is not None
                content = (match_mask & filemask) == 0
                if content or mask == 7:
                    self.relevant[side][path] = RELEVANT_CONTENT if content else RELEVANT_LOCATION
                self.pairs[side].append(("D", path, base))
            if not filemask & 1 and filemask & bit:
                added = names[side]
                assert added is not None
                self.pairs[side].append(("A", path, added))
        return mask

    def _handle_deferred(self) -> None:
        """handle_deferred_entries: a directory one side left as it was resolves to the
        other side's, unless that side's renames need what lies inside."""
        for side in (1, 2):
            okay = not self.relevant[side]
            self.trivial_ok[side] = okay
            deferred, self.deferred[side] = self.deferred[side], {}
            for path in hashmap_order(deferred):  # git walks them in its map's order
                mask = deferred[path]
                info = self.paths[path]
                if okay:
                    self._resolve_trivially(info, side)
                    continue
                names = info.stages
                info.match_mask &= info.filemask
                info.stages = [None if _is_dir(e) else e for e in names]
                self._walk([e[1] if _is_dir(e) else None for e in names], path, mask)  # type: ignore[index]
            for path in self.deferred[side]:
                self._resolve_trivially(self.paths[path], side)
            self.deferred[side] = {}

    def _resolve_trivially(self, info: Info, side: int) -> None:
        entry = info.stages[side]
        info.result = entry
        info.is_null = entry is None
        info.match_mask = 0
        info.clean = True
        info.resolved_dir = True
        info.stages = [None if _is_dir(e) else e for e in info.stages]

    # -- renames (detect_and_process_renames) --------------------------------------------

    def _renames(self) -> None:
        side_pairs: dict[int, list[tuple[str, str, str]]] = {}
        dir_counts: dict[int, dict[str, dict[str, int]]] = {1: {}, 2: {}}
        for side in (1, 2):
            pairs = self.pairs[side]
            statuses = [(kind, path, path) for kind, path, _ in pairs]
            if pairs and self.relevant[side]:
                sources = [
                    File(path, e[0], e[1])
                    for kind, path, e in pairs
                    if kind == "D" and e[1] != EMPTY_BLOB
                ]
                dests = [
                    File(path, e[0], e[1])
                    for kind, path, e in pairs
                    if kind == "A" and e[1] != EMPTY_BLOB
                ]
                renamed, dir_counts[side] = detect_renames(
                    sources, dests, self.relevant[side], self.dirs_removed[side], self.reader.raw
                )
                moved = {dests[d].path: sources[s].path for d, s in renamed.items()}
                gone = set(moved.values())
                statuses = [
                    ("R", moved[path], path)
                    if kind == "A" and path in moved
                    else (kind, path, path)
                    for kind, path, _ in pairs
                    if not (kind == "D" and path in gone)
                ]
            side_pairs[side] = statuses
        dir_renames: dict[int, dict[str, str]] = {1: {}, 2: {}}
        if self.depth == 0:
            for side in (1, 2):
                dir_renames[side] = _provisional_dir_renames(dir_counts[side])
            for old_dir in set(dir_renames[1]) & set(dir_renames[2]):
                del dir_renames[1][old_dir]
                del dir_renames[2][old_dir]
        collisions = {side: _collisions(side_pairs[side], dir_renames[3 - side]) for side in (1, 2)}
        combined: list[tuple[str, str, int]] = []
        for side in (1, 2):
            for kind, old, new in side_pairs[side]:
                if kind not in ("A", "R"):
                    continue
                new_path = self._dir_rename_for(new, side, dir_renames, collisions)
                if kind != "R" and new_path is None:
                    continue
                if new_path is not None:
                    self._apply_dir_rename(new, new_path)
                    new = new_path
                combined.append((old, new, side))
        combined.sort(key=lambda pair: pair[0])
        self._process_renames(combined)

    def _dir_rename_for(
        self,
        path: str,
        side: int,
        dir_renames: dict[int, dict[str, str]],
        collisions: dict[int, dict[str, list[str]]],
    ) -> str | None:
        """check_for_directory_rename: where the other side's renaming of a directory
        above ``path`` moves it (None: nowhere, or a collision prevents it)."""
        renames = dir_renames[3 - side]
        if not renames or path in collisions[3 - side]:
            return None
        found = _renamed_dir(path, renames)
        if found is None:
            return None
        old_dir, new_dir = found
        if new_dir in dir_renames[side]:
            return None  # the directory it would go to was renamed on this side itself
        new_path = _apply_dir(old_dir, new_dir, path)
        sources = collisions[side].get(new_path, [])
        reported = self.reported[side]
        if new_path in reported or self._in_way(new_path, side) or len(sources) > 1:
            reported.add(new_path)
            return None
        return new_path

    def _in_way(self, path: str, side: int) -> bool:
        """path_in_way: something already at ``path`` (settled, or on ``side``)."""
        existing = self.paths.get(path)
        if existing is None:
            directory = _dirname(path)
            shared = self.shared.get(directory)
            name = path[len(directory) + 1 :] if directory else path
            return shared is not None and name in shared
        return existing.clean or bool((1 << side) & (existing.filemask | existing.dirmask))

    def _apply_dir_rename(self, old_path: str, new_path: str) -> None:
        """apply_directory_rename_modifications: move ``old_path``'s record (a file one side
        added inside a directory the other side renamed) to ``new_path``, as a conflict."""
        info = self.paths[old_path]
        parent = _dirname(new_path)
        missing = []
        while parent and parent not in self.paths:
            missing.append(parent)
            parent = _dirname(parent)
        for directory in reversed(missing):
            self.paths[directory] = Info(
                directory,
                [None, None, None],
                [directory] * 3,
                dirmask=info.filemask,
                directory=_dirname(directory),
            )
            self.touched.add(directory)
        if info.dirmask == 0:
            del self.paths[old_path]
        else:
            moved = info.copy()
            moved.dirmask = 0
            moved.stages[1] = None
            info.filemask = 0
            info.clean = True
            info.stages = [None, None, None]
            info = moved
        info.directory = _dirname(new_path)
        existing = self.paths.get(new_path)
        if existing is None:
            info.path = new_path
            self.paths[new_path] = info
            self.touched.add(new_path)
        else:
            existing.filemask |= info.filemask
            if existing.dirmask:
                existing.df_conflict = True
            index = info.filemask >> 1
            existing.pathnames[index] = info.pathnames[index]
            existing.stages[index] = info.stages[index]
            info = existing
        info.path_conflict = True

    def _process_renames(self, renames: list[tuple[str, str, int]]) -> None:
        """process_renames: move each renamed file's record to its new path, or record why
        it cannot be (rename/rename, rename/delete, collisions)."""
        i = 0
        while i < len(renames):
            old, new, side = renames[i]
            oldinfo = self.paths.get(old)
            newinfo = self.paths.get(new)
            if oldinfo is None or oldinfo.clean:
                i += 1
                continue
            if i + 1 < len(renames) and renames[i + 1][0] == old:
                other_new = renames[i + 1][1]
                pathnames = [old, new, other_new]
                side1, side2 = self.paths[new], self.paths[other_new]
                if new == other_new:  # both sides renamed it alike
                    side1.stages[0] = oldinfo.stages[0]
                    side1.filemask |= 1
                    oldinfo.is_null = True
                    oldinfo.clean = True
                    i += 2
                    continue
                clean, merged = self._content_merge(
                    old,
                    oldinfo.stages[0],
                    side1.stages[1],
                    side2.stages[2],
                    pathnames,
                    1 + 2 * self.depth,
                )
                was_binary = not clean and merged == side1.stages[1]
                side1.stages[1] = merged
                side2.stages[2] = side2.stages[2] if was_binary else merged
                side1.path_conflict = side2.path_conflict = oldinfo.path_conflict = True
                i += 2
                continue
            assert newinfo is not None
            other = 3 - side
            old_sidemask = 1 << other
            source_deleted = oldinfo.filemask == 1
            collision = bool(newinfo.filemask & old_sidemask)
            old_other = oldinfo.stages[other]
            new_target = newinfo.stages[side]
            type_changed = not source_deleted and stat.S_ISREG(
                old_other[0] if old_other else 0
            ) != stat.S_ISREG(new_target[0] if new_target else 0)
            if type_changed and collision:
                collision = False
            if collision and not source_deleted:  # rename/add or rename/rename(2to1)
                pathnames = [old, old, old]
                pathnames[side] = new
                infos = [self.paths[p] for p in pathnames]
                _, merged = self._content_merge(
                    old,
                    infos[0].stages[0],
                    infos[1].stages[1],
                    infos[2].stages[2],
                    pathnames,
                    1 + 2 * self.depth,
                )
                newinfo.stages[side] = merged
            elif collision:  # rename/add/delete
                newinfo.path_conflict = True
            else:
                newinfo.stages[0] = oldinfo.stages[0]
                newinfo.filemask |= 1
                newinfo.pathnames[0] = old
                if type_changed:
                    oldinfo.stages[0] = None
                    oldinfo.filemask &= 6
                elif source_deleted:
                    newinfo.path_conflict = True
                else:
                    newinfo.stages[other] = oldinfo.stages[other]
                    newinfo.filemask |= old_sidemask
                    newinfo.pathnames[other] = old
            if not type_changed:
                oldinfo.is_null = True
                oldinfo.clean = True
            i += 1

    # -- content merges (handle_content_merge, merge_3way, ll_merge) -------------------

    def _content_merge(
        self,
        path: str,
        o: Entry | None,
        a: Entry | None,
        b: Entry | None,
        pathnames: list[str],
        extra_marker: int,
    ) -> tuple[bool, Entry | None]:
        assert a is not None and b is not None
        o_mode, o_sha = o if o is not None else (0, b"0" * 40)
        a_mode, a_sha = a
        b_mode, b_sha = b
        clean = True
        if a_mode in (b_mode, o_mode):
            mode = b_mode
        else:
            mode = a_mode
            clean = b_mode == o_mode
        if a_sha in (b_sha, o_sha):
            sha = b_sha
        elif b_sha == o_sha:
            sha = a_sha
        elif stat.S_ISREG(a_mode):
            two_way = (o_mode & _IFMT) != (a_mode & _IFMT)
            base = None if two_way else o
            data, conflict = self._merge_blobs(path, base, a, b, pathnames, extra_marker)
            sha = self.reader.keep(b"blob", data)
            clean = clean and not conflict
        elif S_ISGITLINK(a_mode):
            clean = False  # git cannot merge a submodule it has not checked out
            sha = o_sha if self.depth else a_sha
            if self.depth and (o_mode & _IFMT) != (a_mode & _IFMT):
                mode, sha = o_mode, o_sha
        else:  # symlinks
            clean = False
            if self.depth:
                mode, sha = o_mode, o_sha
            else:
                sha = a_sha
        if not mode:
            return clean, None
        return clean, (mode, sha)

    def _merge_blobs(
        self,
        path: str,
        o: Entry | None,
        a: Entry,
        b: Entry,
        pathnames: list[str],
        extra_marker: int,
    ) -> tuple[bytes, bool]:
        orig, ours, theirs = self.reader.blob(o), self.reader.blob(a), self.reader.blob(b)
        driver = self.attributes.driver(path)
        if driver == "binary" or any(map(is_git_binary, (orig, ours, theirs))):
            if self.depth:
                return orig, False
            return ours, True
        if pathnames[0] == pathnames[1] == pathnames[2]:
            names = self.labels
        else:
            names = (f"{self.labels[0]}:{pathnames[1]}", f"{self.labels[1]}:{pathnames[2]}")
        base_lines = _lines(orig)
        lines, conflicts = merge_lines(
            base_lines,
            _lines_sharing(ours, orig, base_lines),
            _lines_sharing(theirs, orig, base_lines),
            (
                names[0].encode("utf-8", "surrogateescape"),
                names[1].encode("utf-8", "surrogateescape"),
            ),
            b"\n",
            marker_size=MARKER_SIZE + extra_marker,
            union=driver == "union",
        )
        return b"".join(lines), conflicts > 0

    @property
    def attributes(self) -> MergeAttributes:
        """The merge attributes of ours, the tree merged into (see :mod:`.attributes`)."""
        if self._attributes is None:
            reader, ours = self.reader, self.trees[1]

            def read(path: str) -> bytes | None:
                entry = reader.lookup(ours, path)
                return reader.blob(entry) if entry is not None and stat.S_ISREG(entry[0]) else None

            self._attributes = MergeAttributes(read)
        return self._attributes

    # -- resolving each path (process_entries, process_entry) --------------------------

    def _process(self) -> None:
        self.nonempty: dict[str, int] = {}
        self.seen: set[str] = set()  # directories with an entry processed
        self.shadowed: set[str] = set()  # files whose children the merge drops, as git does
        self.completed: set[str] = set()  # settled paths remade from the entries below them
        for path in sorted(self.paths, key=_children_last, reverse=True):
            info = self.paths.get(path)
            if info is None:
                continue
            if path in self.seen and (info.clean or not info.dirmask):
                self._complete(path, info)
            if info.clean:
                self._record(info)
            else:
                self._process_entry(path, info)
            self.seen.add(info.directory)

    def _complete(self, path: str, info: Info) -> None:
        """Entries were placed below a path whose record is not a directory being merged (a
        directory rename moved a file under a file of the other side, or into a directory
        settled whole). git writes them as a tree into that path's result: a settled entry
        becomes that directory, holding only them (or nothing, if none is left); an
        unsettled file is then resolved as a file, which drops them."""
        if not info.clean:
            self.shadowed.add(path)
            return
        self.completed.add(path)
        info.resolved_dir = False
        if self.nonempty.get(path, 0):
            info.result = (stat.S_IFDIR, b"")
            info.is_null = False
        else:
            info.result = None
            info.is_null = True

    def _record(self, info: Info) -> None:
        if not info.is_null:
            self.nonempty[info.directory] = self.nonempty.get(info.directory, 0) + 1

    def _unique_path(self, path: str, branch: str) -> str:
        base = f"{path}~{branch.replace('/', '_')}"
        candidate, suffix = base, 0
        while candidate in self.paths or self._exists(candidate):
            candidate = f"{base}_{suffix}"
            suffix += 1
        return candidate

    def _exists(self, path: str) -> bool:
        return any(self.reader.lookup(tree, path) is not None for tree in self.trees)

    def _process_entry(self, path: str, ci: Info) -> None:
        df_file_index = 0
        dir_full = False
        if ci.dirmask:
            dir_full = self.nonempty.get(path, 0) + self.static.get(path, 0) > 0
            ci.is_null = not dir_full
            ci.result = (stat.S_IFDIR, b"") if dir_full else None
            self._record(ci)
            if ci.filemask == 0:
                return
        if ci.df_conflict and not dir_full:
            ci.df_conflict = False
            ci.clean = False
            ci.is_null = False
            ci.match_mask &= ~ci.dirmask
            ci.dirmask = 0
            for i in range(3):
                if not ci.filemask & (1 << i):
                    ci.stages[i] = None
        elif ci.df_conflict:
            if ci.filemask == 1:
                ci.filemask = 0
                return
            new = ci.copy()
            new.match_mask &= ~new.dirmask
            new.dirmask = 0
            new.result = None
            new.is_null = False
            for i in range(3):
                if not new.filemask & (1 << i):
                    new.stages[i] = None
            df_file_index = 2 if ci.dirmask & 2 else 1
            path = self._unique_path(path, self.labels[df_file_index - 1])
            new.path = path
            self.paths[path] = new
            self.touched.add(path)
            ci.filemask = 0
            ci = new
        if ci.match_mask:
            ci.clean = not ci.df_conflict and not ci.path_conflict
            if ci.match_mask == 6:
                ci.result = ci.stages[1]
            else:
                side = 2 if (7 & ~ci.match_mask) == 4 else 1
                ci.result = ci.stages[side]
                ci.is_null = ci.result is None
                if ci.is_null:
                    ci.clean = True
        elif ci.filemask >= 6 and _kind(ci.stages[1]) != _kind(ci.stages[2]):
            if self.depth:
                ci.clean = False
                ci.result = ci.stages[0]
                ci.is_null = ci.result is None
            else:
                path = self._distinct_types(path, ci)
        elif ci.filemask >= 6:
            clean, merged = self._content_merge(
                path, ci.stages[0], ci.stages[1], ci.stages[2], ci.pathnames, self.depth * 2
            )
            ci.clean = clean and not ci.df_conflict and not ci.path_conflict
            ci.result = merged
            ci.is_null = merged is None
            if clean and ci.df_conflict:
                ci.filemask = 1 << df_file_index
                ci.stages[df_file_index] = merged
        elif ci.filemask in (3, 5):
            side = 2 if ci.filemask == 5 else 1
            ci.result = ci.stages[0 if self.depth else side]
            ci.clean = False
        elif ci.filemask in (2, 4):
            ci.result = ci.stages[2 if ci.filemask == 4 else 1]
            ci.clean = not ci.df_conflict and not ci.path_conflict
        elif ci.filemask == 1:
            ci.is_null = True
            ci.result = None
            ci.clean = not ci.path_conflict
        if not ci.clean:
            self.conflicted[path] = ci
        self._record(ci)

    def _distinct_types(self, path: str, ci: Info) -> str:
        """Two different kinds of entry (file, symlink, submodule) at one path: each kept,
        the regular file (or both) moved aside to ``path~branch``; the path to go on with."""
        o, a, b = ci.stages
        assert a is not None and b is not None
        rename_a = stat.S_ISREG(a[0])
        rename_b = not rename_a and stat.S_ISREG(b[0])
        if not rename_a and not rename_b:
            rename_a = rename_b = True
        a_path = self._unique_path(path, self.labels[0]) if rename_a else None
        b_path = self._unique_path(path, self.labels[1]) if rename_b else path
        ci.clean = False
        new = ci.copy()
        new.result = b
        new.stages[1] = None
        new.filemask = 5
        if _kind(b) != _kind(o):
            new.stages[0] = None
            new.filemask = 4
        ci.result = a
        ci.stages[2] = None
        ci.filemask = 3
        if _kind(a) != _kind(o):
            ci.stages[0] = None
            ci.filemask = 2
        if a_path is not None:
            ci.path = a_path
            self.paths[a_path] = ci
            self.touched.add(a_path)
        new.path = b_path
        self.paths[b_path] = new
        self.touched.add(b_path)
        if rename_a and rename_b:
            del self.paths[path]
        self.conflicted[b_path] = new
        self._record(new)
        return a_path if a_path is not None else path

    # -- the outcome ----------------------------------------------------------------------

    def _outcome(self) -> Merged:
        changes: dict[str, Entry | None] = {}
        ours_tree = self.trees[1]
        for path in sorted(self.touched):
            info = self.paths.get(path)
            if self.shadowed and any(path.startswith(dropped + "/") for dropped in self.shadowed):
                info = None
            if info is not None and info.resolved_dir and info.clean:
                before = self.reader.lookup(ours_tree, path)
                if before == info.result:
                    continue
                old = dict(self.reader.files(path, before))
                new = dict(self.reader.files(path, info.result))
                for name in old.keys() | new.keys():
                    if old.get(name) != new.get(name):
                        changes[name] = new.get(name)
                continue
            result = None
            if info is not None and not info.is_null and not _is_dir(info.result):
                result = info.result
            before = self.reader.lookup(ours_tree, path)
            if _is_dir(before):
                before = None
            if before != result:
                changes[path] = result
        for path in self.completed:  # what ours had there, and no entry below replaced, goes
            for name, _ in self.reader.files(path, self.reader.lookup(ours_tree, path)):
                below = self.paths.get(name)
                if name not in changes and (below is None or below is self.paths.get(path)):
                    changes[name] = None
        conflicts = sorted(p for p, ci in self.conflicted.items() if ci.filemask)
        renamed = {}
        for path, info in self.paths.items():
            source = info.pathnames[1]
            if source != path and not info.is_null and info.filemask & 2 and path in changes:
                before = self.reader.lookup(ours_tree, source)
                if before is not None and not _is_dir(before):
                    renamed[path] = source
        return Merged(changes, self.paths, conflicts, ours_tree, renamed)


def _kind(entry: Entry | None) -> int:
    return 0 if entry is None else entry[0] & _IFMT


def _lines_sharing(data: bytes, base: bytes, base_lines: list[bytes]) -> list[bytes]:
    """:func:`_lines` of ``data``, the whole lines it starts and ends with as ``base`` does
    being ``base_lines``' own objects (hashed once, compared by identity: cheaper to class).
    """
    shortest = min(len(data), len(base))
    lo, hi = 0, shortest  # the longest common prefix, by halving (each test a memcmp)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if data[:mid] == base[:mid]:
            lo = mid
        else:
            hi = mid - 1
    head = data.rfind(b"\n", 0, lo) + 1  # whole lines only
    lo, hi = 0, shortest - head  # the longest common suffix after them
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if data[len(data) - mid :] == base[len(base) - mid :]:
            lo = mid
        else:
            hi = mid - 1
    tail = lo
    while tail:  # whole lines only, in both: the suffix starts a line in each
        start_data, start_base = len(data) - tail, len(base) - tail
        if data[start_data - 1 : start_data] in (b"\n", b"") and base[
            start_base - 1 : start_base
        ] in (b"\n", b""):
            break
        at = data.find(b"\n", start_data)  # the next line's start: a shorter suffix
        tail = len(data) - at - 1 if at >= 0 else 0
    if not head and not tail:
        return _lines(data)
    head_lines = base.count(b"\n", 0, head)
    suffix = base[len(base) - tail :]
    tail_lines = suffix.count(b"\n") + (1 if suffix and not suffix.endswith(b"\n") else 0)
    kept_tail = base_lines[len(base_lines) - tail_lines :] if tail_lines else []
    return base_lines[:head_lines] + _lines(data[head : len(data) - tail]) + kept_tail


def _lines(data: bytes) -> list[bytes]:
    """``data``'s lines, each with its LF (the last one possibly without)."""
    if b"\r" not in data:
        return data.splitlines(keepends=True)  # splits at LF only, when there is no CR
    parts = data.split(b"\n")
    lines = [part + b"\n" for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def _provisional_dir_renames(counts: dict[str, dict[str, int]]) -> dict[str, str]:
    """get_provisional_directory_renames: each removed directory renamed to where most of
    its files went; none where two places tie."""
    out = {}
    for old_dir, targets in counts.items():
        best, top, tied = "", 0, 0
        for new_dir, n in targets.items():
            if n == top:
                tied = top
            elif n > top:
                best, top = new_dir, n
        if top and tied != top:
            out[old_dir] = best
    return out


def _renamed_dir(path: str, renames: dict[str, str]) -> tuple[str, str] | None:
    """check_dir_renamed: the nearest directory above ``path`` that was renamed."""
    directory = path
    while "/" in directory:
        directory = directory[: directory.rfind("/")]
        if directory in renames:
            return directory, renames[directory]
    return None


def _apply_dir(old_dir: str, new_dir: str, path: str) -> str:
    rest = path[len(old_dir) :]
    if not new_dir:
        rest = rest[1:]
    return new_dir + rest


def _collisions(pairs: list[tuple[str, str, str]], renames: dict[str, str]) -> dict[str, list[str]]:
    """compute_collisions: for each path the other side's directory renames would move
    files to, which of this side's added or renamed files would go there."""
    out: dict[str, list[str]] = {}
    if not renames:
        return out
    for kind, _, new in pairs:
        if kind not in ("A", "R"):
            continue
        found = _renamed_dir(new, renames)
        if found is None:
            continue
        out.setdefault(_apply_dir(found[0], found[1], new), []).append(new)
    return out
