"""The other files of a branch as completion context: listed from git once per branch head,
read from git or from their live documents, and ranked for the file being edited by what it
imports, by recent edits and by name similarity."""

from __future__ import annotations

import collections
import posixpath
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from dulwich.errors import NotTreeError
from dulwich.objects import Blob, Commit, Tree

from gitsync.changes import shown_path

__all__ = [
    "BlobTexts",
    "Candidate",
    "blob_ids",
    "imported_paths",
    "list_branch",
    "rank",
    "read_blob",
]

MAX_FILES = 20_000  # files listed per branch head, at most
MAX_BLOB = 256 * 1024  # larger files are never context
RECENT = 600.0  # seconds over which an edit stops counting as recent

_PY_FROM = re.compile(r"^[ \t]*from[ \t]+(\.*[\w.]*)[ \t]+import[ \t]+\(?([\w, \t]*)", re.M)
_PY_IMPORT = re.compile(r"^[ \t]*import[ \t]+([\w., \t]+)", re.M)
_JS_IMPORT = re.compile(
    r"""(?:\bfrom[ \t]*|\bimport[ \t]*\(?[ \t]*|\brequire[ \t]*\([ \t]*)["']([^"'\n]+)["']"""
)
_C_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]*"([^"\n]+)"', re.M)
_RUST_MOD = re.compile(r"^[ \t]*(?:pub[ \t]+)?mod[ \t]+(\w+)[ \t]*;", re.M)
_RUST_USE = re.compile(r"^[ \t]*(?:pub[ \t]+)?use[ \t]+(?:crate|super)::([\w:]+)", re.M)
_SCRIPT_EXTENSIONS = ("", ".ts", ".tsx", ".js", ".jsx", ".mjs", ".cjs", ".svelte", ".vue")
_INDEX = ("/index.ts", "/index.js", "/index.tsx", "/index.jsx")
_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")


@dataclass(frozen=True, slots=True)
class Candidate:
    """A file of the branch that may go into a prompt."""

    path: str
    sha: bytes | None  # its blob at the branch head; None for a live document git lacks
    edited: float | None = None  # when its live document was last edited (monotonic)


# -- git -----------------------------------------------------------------------------------


def list_branch(repo: Any, head: bytes) -> list[tuple[str, bytes]]:
    """``(path, blob id)`` of the regular files at commit ``head`` (a git thread's work)."""
    commit = repo[head]
    if not isinstance(commit, Commit):
        return []
    out: list[tuple[str, bytes]] = []
    stack: list[tuple[str, bytes]] = [("", commit.tree)]
    while stack and len(out) < MAX_FILES:
        prefix, tree_id = stack.pop()
        tree = repo[tree_id]
        if not isinstance(tree, Tree):
            continue
        for entry in tree.items():
            name = shown_path(entry.path.decode("utf-8", "surrogateescape"))
            if stat.S_ISDIR(entry.mode):
                if name not in ("node_modules", ".git"):
                    stack.append((f"{prefix}{name}/", entry.sha))
            elif stat.S_ISREG(entry.mode):
                out.append((prefix + name, entry.sha))
    return out


def blob_ids(repo: Any, head: bytes, paths: Iterable[str]) -> dict[str, bytes | None]:
    """The blob id of each of ``paths`` at commit ``head``, None where it is no regular file
    there (a git thread's work): a few tree lookups, where listing the branch walks it all."""
    commit = repo[head]
    root = repo[commit.tree] if isinstance(commit, Commit) else None
    found: dict[str, bytes | None] = {}
    for path in paths:
        found[path] = None
        if not isinstance(root, Tree):
            continue
        try:
            mode, sha = root.lookup_path(repo.__getitem__, path.encode())
        except (KeyError, NotTreeError):
            continue
        if stat.S_ISREG(mode):
            found[path] = bytes(sha)
    return found


def read_blob(repo: Any, sha: bytes) -> str | None:
    """The blob's text, or None for a large, binary or non-UTF-8 one (a git thread's work)."""
    blob = repo[sha]
    if not isinstance(blob, Blob):
        return None
    data = blob.as_raw_string()
    if len(data) > MAX_BLOB or b"\x00" in data[:8000]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


class BlobTexts:
    """Texts of blobs by id, least recently used out first, within ``max_chars``."""

    def __init__(self, max_chars: int = 32 * 1024 * 1024) -> None:
        self.max_chars = max_chars
        self._texts: collections.OrderedDict[bytes, str | None] = collections.OrderedDict()
        self._chars = 0

    def get(self, sha: bytes) -> tuple[bool, str | None]:
        """``(known, text)``: whether it was read before, and its text (None if unusable)."""
        if sha not in self._texts:
            return False, None
        self._texts.move_to_end(sha)
        return True, self._texts[sha]

    def put(self, sha: bytes, text: str | None) -> None:
        if sha in self._texts:
            return
        self._texts[sha] = text
        self._chars += len(text or "")
        while self._chars > self.max_chars and self._texts:
            _, dropped = self._texts.popitem(last=False)
            self._chars -= len(dropped or "")


# -- ranking -------------------------------------------------------------------------------


def imported_paths(path: str, text: str, paths: Iterable[str]) -> set[str]:
    """The files among ``paths`` that ``text`` (the file at ``path``) imports or includes:
    Python imports, JavaScript/TypeScript/Svelte imports and requires, C includes and Rust
    modules; relative names from the file's folder, absolute ones matched as path endings."""
    here = posixpath.dirname(path)
    exact: set[str] = set()
    endings: set[str] = set()
    modules = [(m, "") for line in _PY_IMPORT.findall(text) for m in line.split(",")]
    for module, names in _PY_FROM.findall(text):
        modules.append((module, ""))
        modules.extend((module, name) for name in names.split(","))
    for module, name in modules:
        module, name = module.strip().split(" ")[0], name.strip().split(" ")[0]
        dots = len(module) - len(module.lstrip("."))
        stem = "/".join(p for p in (module[dots:].replace(".", "/"), name) if p)
        if dots:
            base = here
            for _ in range(dots - 1):
                base = posixpath.dirname(base)
            stem = posixpath.join(base, stem) if stem else base
            exact.update({f"{stem}.py", f"{stem}/__init__.py"})
        elif stem:
            endings.update({f"{stem}.py", f"{stem}/__init__.py"})
    for spec in _JS_IMPORT.findall(text) + _C_INCLUDE.findall(text):
        if spec.startswith("."):
            stem = posixpath.normpath(posixpath.join(here, spec))
            exact.update(stem + ext for ext in (*_SCRIPT_EXTENSIONS, ".json", *_INDEX, ".h"))
        elif "/" in spec or "." in spec:  # a header, or a path inside a package
            endings.update(spec + ext for ext in _SCRIPT_EXTENSIONS)
    for module in _RUST_MOD.findall(text):
        exact.update({posixpath.join(here, f"{module}.rs"), posixpath.join(here, module, "mod.rs")})
    for use in _RUST_USE.findall(text):
        parts = use.split("::")
        for n in range(len(parts), 0, -1):
            endings.add("/".join(parts[:n]) + ".rs")
    found = set()
    for candidate in paths:
        if candidate == path:
            continue
        if candidate in exact or any(
            candidate == e or candidate.endswith("/" + e) for e in endings
        ):
            found.add(candidate)
    return found


def _words(path: str) -> set[str]:
    stem = posixpath.splitext(posixpath.basename(path))[0]
    return {w.lower() for w in _WORD.findall(stem)} - {"test", "tests", "spec", "index"}


def similarity(a: str, b: str) -> float:
    """How alike two file names are (shared words of their stems, 0 to 1)."""
    words_a, words_b = _words(a), _words(b)
    if not words_a or not words_b:
        return 0.0
    return len(words_a & words_b) / len(words_a | words_b)


def _distance(a: str, b: str) -> int:
    here, there = posixpath.dirname(a).split("/"), posixpath.dirname(b).split("/")
    common = 0
    for x, y in zip(here, there, strict=False):
        if x != y:
            break
        common += 1
    return len(here) + len(there) - 2 * common


def rank(
    path: str,
    text: str,
    candidates: Mapping[str, Candidate],
    now: float,
    preferred: Iterable[str] = (),
) -> list[Candidate]:
    """``candidates`` (other files of the branch) for the file at ``path`` holding ``text``,
    most relevant first: what it imports, then recently edited files (and ``preferred`` ones,
    the requester's open documents), then similar names, then the nearest folders."""
    imports = imported_paths(path, text, candidates)
    liked = set(preferred)

    def score(item: Candidate) -> tuple[float, int, str]:
        recent = 0.0
        if item.edited is not None:
            recent = max(0.0, 1.0 - (now - item.edited) / RECENT)
        value = 4.0 * (item.path in imports) + 2.0 * recent + 0.5 * (item.path in liked)
        value += similarity(path, item.path)
        return (-value, _distance(path, item.path), item.path)

    return sorted((c for c in candidates.values() if c.path != path), key=score)
