"""Validation of repository, branch and path names, and the ``<repo>/<branch>:<path>`` doc id."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .dotgit import is_dotgit
from .errors import ErrorCode, ProtocolError

__all__ = ["DocId", "is_commit_id", "validate_branch", "validate_path", "validate_repo"]

_REPO_RE = re.compile(r"[A-Za-z0-9._-]{1,100}")
_BRANCH_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")
# Percent-encoded '.', '/', '\' or NUL left in a name after URL decoding mean double encoding:
# an attempt to smuggle a traversal past a decoder, never a real file name.
_ENCODED_TRAVERSAL = re.compile(r"%(2e|2f|5c|00)", re.IGNORECASE)
MAX_BRANCH = 200
MAX_BRANCH_PART = 200  # bytes of one part of a branch name: a file name in refs/ (255 at most),
# with room for ".lock" and the suffix of a branch made from it ("-rescued-<commit>")
MAX_PATH = 4096
MAX_PATH_COMPONENT = 255
MAX_PATH_DEPTH = 128
"""The most components a path may have (directories inside directories): far past any real
tree, and a bound on what walks it."""


_COMMIT_ID = re.compile(r"[0-9a-f]{40}")


def is_commit_id(text: str) -> bool:
    """Whether ``text`` is a commit's full id as git writes it (40 lowercase hex digits)."""
    return _COMMIT_ID.fullmatch(text) is not None


def _bad(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_NAME, message)


def validate_repo(name: str) -> str:
    """Return ``name`` if it is a valid repository name, else raise ``ProtocolError``.

    A name ends without ``.git``: repository ``x`` is the directory ``x`` or ``x.git``, and
    ``x.git`` as a name would open the same repository again under a second name (its
    documents as second rooms, out of sync with the first)."""
    if not _REPO_RE.fullmatch(name) or set(name) == {"."}:
        raise _bad(f"invalid repository name {name!r}: use 1-100 of A-Z a-z 0-9 . _ -")
    if name.lower().endswith(".git"):  # the directory of repository "x" is "x" or "x.git"
        raise _bad(f"invalid repository name {name!r}: name it without '.git'")
    return name


def validate_branch(name: str) -> str:
    """Apply the rules of ``git check-ref-format --branch`` to ``name``; also refuse a name
    that reads as a full ref name (``refs/heads/x`` would be ``refs/heads/refs/heads/x``,
    which git names ambiguously)."""
    if not name or len(name) > MAX_BRANCH:
        raise _bad(f"invalid branch name {name[:MAX_BRANCH]!r}: empty or too long")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _bad("invalid branch name: not valid Unicode") from exc
    if _BRANCH_FORBIDDEN.search(name):
        raise _bad(f"invalid branch name {name!r}: control character, space or one of ~^:?*[\\")
    if (
        name in ("@", "HEAD")
        or "@{" in name
        or ".." in name
        or "//" in name
        or name.startswith(("/", "-", "refs/"))
        or name.endswith(("/", "."))
    ):
        raise _bad(f"invalid branch name {name!r}")
    for part in name.split("/"):
        if part.startswith(".") or part.endswith(".lock"):
            raise _bad(f"invalid branch name {name!r}: component {part!r}")
        if len(part.encode("utf-8")) > MAX_BRANCH_PART:
            raise _bad(
                f"invalid branch name {name[:64]!r}...: a part of more than {MAX_BRANCH_PART} "
                "bytes (UTF-8)"
            )
    return name


_PATH_CONTROL = re.compile(r"[\x00-\x1f\x7f\\]")


def validate_path(path: str) -> str:
    """Return the normalised form of a path inside a repository, or raise ``ProtocolError``.

    Empty and ``.`` components are dropped; ``..``, absolute paths, ``.git`` (and the names
    a filesystem takes for it: ``.GIT.``, ``git~1``, ``.g\u200cit``...), NUL, backslashes
    and control characters are refused.
    """
    if not path or len(path.encode("utf-8", "surrogatepass")) > MAX_PATH:
        raise _bad("invalid path: empty or too long")
    if path.startswith("/"):
        raise _bad(f"invalid path {path!r}: absolute")
    if _PATH_CONTROL.search(path):
        raise _bad(f"invalid path {path!r}: backslash or control character")
    if _ENCODED_TRAVERSAL.search(path):
        raise _bad(f"invalid path {path!r}: percent-encoded '.', '/', '\\' or NUL")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _bad("invalid path: not valid Unicode") from exc
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if not parts:
        raise _bad(f"invalid path {path!r}: names no file")
    if len(parts) > MAX_PATH_DEPTH:
        raise _bad(f"invalid path {path[:64]!r}...: over {MAX_PATH_DEPTH} directories deep")
    for part in parts:
        if part == "..":
            raise _bad(f"invalid path {path!r}: '..' leaves the repository")
        if is_dotgit(part.encode("utf-8")):  # .git, or a spelling some filesystem folds to it
            raise _bad(f"invalid path {path!r}: inside .git")
        if len(part.encode("utf-8")) > MAX_PATH_COMPONENT:
            raise _bad(f"invalid path {path!r}: component too long")
    return "/".join(parts)


@dataclass(frozen=True, slots=True)
class DocId:
    """The address of one document: a file ``path`` on ``branch`` of ``repo``."""

    repo: str
    branch: str
    path: str

    def __post_init__(self) -> None:
        validate_repo(self.repo)
        validate_branch(self.branch)
        if validate_path(self.path) != self.path:
            raise _bad(f"path {self.path!r} is not normalised")

    @classmethod
    def parse(cls, text: str) -> DocId:
        """Parse ``<repo>/<branch>:<path>``; the path is normalised."""
        repo, slash, rest = text.partition("/")
        branch, colon, path = rest.partition(":")
        if not slash or not colon:
            raise _bad(f"invalid document id {text[:200]!r}: expected <repo>/<branch>:<path>")
        return cls(validate_repo(repo), validate_branch(branch), validate_path(path))

    def __str__(self) -> str:
        return f"{self.repo}/{self.branch}:{self.path}"
