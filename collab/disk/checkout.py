"""The working tree's git side, through the git CLI and the server's git bridge: the first
checkout, fetching the branch, reading its files at a commit, and committing what has no
live document (binary and oversized files, deletions) with a push.

The files are checked out as the branch holds them, byte for byte (no line ending
conversion), as the syncer reads and writes them.

The credentials go in an ``Authorization`` header given on each command line, never into
``.git/config``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from gitsync.objects.commits import author_line

__all__ = ["Checkout", "FileMoved", "GitError", "TreeEntry"]

log = logging.getLogger("collab.disk")

_PUSH_TRIES = 5
_BUSY = (
    "index.lock",
    "MERGE_HEAD",
    "CHERRY_PICK_HEAD",
    "REVERT_HEAD",
    "BISECT_LOG",
    "rebase-merge",
    "rebase-apply",
)
"""What in ``.git`` says the person is busy with the checkout (see :meth:`Checkout.follow`)."""
_KEEP_BYTES = "* -text -eol -ident -filter -working-tree-encoding"


class GitError(Exception):
    """A git command failed; the message holds what it printed."""


class FileMoved(Exception):
    """Files a commit was to change changed at the server since they were read."""

    def __init__(self, paths: set[str]) -> None:
        super().__init__(f"changed at the server meanwhile: {', '.join(sorted(paths))}")
        self.paths = paths


@dataclass(frozen=True, slots=True)
class TreeEntry:
    path: str
    mode: str
    sha: str


class Checkout:
    """The git repository of a working tree whose ``origin`` is the server's git bridge."""

    def __init__(
        self, root: Path, url: str, repo: str, branch: str, *, user: str | None, token: str | None
    ) -> None:
        self.root = root
        self.branch = branch
        self._fetching = asyncio.Lock()  # two fetches at once would both lock the ref
        http = url.rstrip("/").replace("ws://", "http://", 1).replace("wss://", "https://", 1)
        self.repo = repo
        self.user = user
        self.remote_url = f"{http}/git/{repo}.git"
        secret = f"{user or 'collab'}:{token or 'dev'}"
        header = "Authorization: Basic " + base64.b64encode(secret.encode()).decode()
        self._auth = ["-c", f"http.extraHeader={header}"]
        self.remote_ref = f"refs/remotes/origin/{branch}"

    async def git(
        self,
        *args: str,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> bytes:
        try:
            process = await asyncio.create_subprocess_exec(
                "git",
                *self._auth,
                *args,
                cwd=str(cwd or self.root),
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env={**os.environ, "GIT_TERMINAL_PROMPT": "0", **(env or {})},
            )
        except FileNotFoundError:
            if shutil.which("git") is not None:
                raise  # (the directory is gone)
            raise GitError("git is not installed (or not on PATH): install it first") from None
        try:
            out, err = await process.communicate(stdin)
        except BaseException:  # cancelled (the syncer stops): leave no process behind
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise
        if process.returncode != 0:
            text = err.decode("utf-8", "replace").strip()
            raise GitError(f"git {args[0]} failed: {text}")
        return out

    async def ensure(self, *, first: bool = True) -> bool:
        """Clone the branch into the root, or adopt the checkout there; True if cloned.

        An existing directory must be empty or a checkout of this repository: its
        ``origin``, if it has one, a server's ``/git/<repo>.git`` (the server may have moved:
        ``origin`` is pointed at this one), and its history one with the branch's. Anything
        else is another project, refused before anything in it is changed. It must have the
        branch checked out (or nothing committed yet): the sync writes the branch's files
        into it, which under another branch's name would read as changes of that branch,
        and the files of another branch are not edits of this one. Adopted the ``first``
        time, it must have no commit of its own that the server lacks: the sync starts from
        the commit the files came from, and would take their changes out of the files as
        changes the server's branch does not have."""
        if (self.root / ".git").is_dir():
            remotes = (await self.git("remote")).decode().split()
            if "origin" in remotes:
                current = (await self.git("remote", "get-url", "origin")).decode().strip()
                if not _names_repo(current, self.repo):
                    raise GitError(
                        f"{self.root} is a checkout of {current}, not of the repository "
                        f"{self.repo!r}: sync into an empty directory (it is cloned there) or "
                        f"a clone of {self.remote_url}"
                    )
            await self._check_related()
            await self._check_checked_out()
            verb = "set-url" if "origin" in remotes else "add"
            await self.git("remote", verb, "origin", self.remote_url)
            if first:
                await self._check_pushed()
            return False
        if self.root.exists() and any(self.root.iterdir()):
            raise GitError(
                f"{self.root} is neither empty nor a git checkout: pick an empty (or new) "
                "directory, or a clone of the branch"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        await self.git(
            "clone",
            "-q",
            "--no-checkout",
            "--branch",
            self.branch,
            self.remote_url,
            str(self.root),
            cwd=Path.cwd(),
        )
        self.keep_bytes()
        await self.git("reset", "-q", "--hard")  # the files, written as the branch holds them
        return True

    def keep_bytes(self) -> None:
        """Have git read and write the files of this tree as the branch holds them, byte for
        byte: no line ending conversion (``core.autocrlf``, ``eol`` and ``text`` in a
        ``.gitattributes``), no keyword expansion, no filters. The syncer sends a file's
        bytes as they are, so a file git converted on checkout would go back to the branch
        as an edit of every line. ``.git/info/attributes`` comes before every
        ``.gitattributes``, and its last lines before its first."""
        info = self.root / ".git" / "info"
        info.mkdir(exist_ok=True)
        path = info / "attributes"
        lines = path.read_text().splitlines() if path.exists() else []
        if not lines or lines[-1] != _KEEP_BYTES:
            path.write_text("".join(line + "\n" for line in [*lines, _KEEP_BYTES]))

    async def take_branch(self, head: str) -> None:
        """Check the branch out in a checkout with nothing committed (``git init``), at
        ``head``, leaving the files as they are: the branch and the index at ``head``, HEAD
        on the branch. Git then sees the branch as the syncer merges it in, as in a clone
        (and a commit made there later is one of the branch's history)."""
        ref = f"refs/heads/{self.branch}"
        await self.git("update-ref", ref, head, "")  # (made only where it is not yet)
        await self.git("symbolic-ref", "HEAD", ref)
        await self.git("read-tree", head)

    async def _check_checked_out(self) -> None:
        """Refuse a checkout with commits that has another branch (or none) checked out."""
        if await self.head() is None:
            return  # nothing committed yet: the branch's files come into it
        try:
            current = (await self.git("symbolic-ref", "-q", "HEAD")).decode().strip()
        except GitError:
            current = ""  # a detached HEAD
        if current == f"refs/heads/{self.branch}":
            return
        shown = current.removeprefix("refs/heads/") or "a detached HEAD"
        raise GitError(
            f"{self.root} has {shown} checked out, not {self.branch}: check that branch out "
            f"there first (git -C {self.root} fetch origin && git -C {self.root} checkout "
            f"{self.branch}), or sync the branch it has (--branch NAME)"
        )

    async def _check_pushed(self) -> None:
        """Refuse a checkout whose branch has commits the server's does not have."""
        mine = await self.head()
        if mine is None:
            return
        await self.fetch()
        try:
            await self.git("merge-base", "--is-ancestor", mine, self.remote_ref)
            return  # each of its commits is the server's
        except GitError:
            pass
        ahead = (await self.git("rev-list", "--count", f"{self.remote_ref}..{mine}")).decode()
        count = int(ahead.strip() or 0)
        shared = (await self.git("merge-base", mine, self.remote_ref)).decode().strip()
        raise GitError(
            f"{self.root} has {count} commit{'s' if count != 1 else ''} on {self.branch} that "
            f"the server does not have: push them first (git -C {self.root} push origin "
            f"{self.branch}), or take them off the branch, their changes kept in the files for "
            f"the sync to send (git -C {self.root} reset {shared[:12]}, the last commit the "
            "server has too)"
        )

    async def _check_related(self) -> None:
        """Refuse a checkout whose commits share no history with the branch."""
        mine = await self.head()
        if mine is None:  # nothing committed yet: the branch's files are merged in
            return
        await self.git("fetch", "-q", self.remote_url, f"refs/heads/{self.branch}")
        try:
            await self.git("merge-base", mine, "FETCH_HEAD")
        except GitError:
            raise GitError(
                f"{self.root} holds a history unrelated to {self.repo!r} {self.branch}: sync "
                f"into an empty directory (it is cloned there) or a clone of {self.remote_url}"
            ) from None

    async def fetch(self) -> str:
        """Fetch the branch from the server; its head. (One fetch at a time: another at once
        failed to lock the remote ref.)"""
        async with self._fetching:
            await self.git("fetch", "-q", "origin", f"+refs/heads/{self.branch}:{self.remote_ref}")
            return (await self.git("rev-parse", self.remote_ref)).decode().strip()

    async def follow(self, head: str) -> None:
        """Move the checked-out branch and the index to ``head``, the branch's head at the
        server, leaving the files as they are: ``git status`` in the tree then shows what is
        not committed yet (live edits), not every commit since the clone, and ``git pull``
        and ``git stash`` start from the branch as it is.

        Only what the person left as the syncer put it is moved: not another branch (or no
        branch) checked out, a branch with commits of its own, an index holding anything
        staged (or a conflict), a merge, rebase or cherry-pick under way, or an index in use
        (git's lock). The index is made beside the real one and renamed over it once the
        branch has moved (moved back if someone's git began meanwhile). Errors are logged,
        never raised."""
        ref = f"refs/heads/{self.branch}"
        git_dir = self.root / ".git"
        try:
            if (await self.git("symbolic-ref", "-q", "HEAD")).decode().strip() != ref:
                return
            local = await self._local(ref)
            if local is None or local == head or any((git_dir / n).exists() for n in _BUSY):
                return
            try:
                await self.git("merge-base", "--is-ancestor", local, head)  # none of its own
                await self.git("diff-index", "--cached", "--quiet", local)  # nothing staged
            except GitError:
                return
            await self._move_index(git_dir, ref, local, head)
        except (GitError, OSError) as exc:
            log.debug("the checkout stays where it is: %s", exc)

    async def _move_index(self, git_dir: Path, ref: str, local: str, head: str) -> None:
        index = git_dir / "index"
        temp = git_dir / f"collab-index-{os.getpid()}"
        scratch = {"GIT_INDEX_FILE": str(temp)}
        try:
            # (git's merge of index entries would refuse the files live edits changed; the
            # next `git status` takes the files' stats again)
            await self.git("read-tree", head, env=scratch)
            await self.git("update-ref", ref, head, local)
            if (git_dir / "index.lock").exists():  # someone's git began meanwhile
                await self.git("update-ref", ref, local, head)
                return
            os.replace(temp, index)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)

    async def _local(self, ref: str) -> str | None:
        try:
            return (await self.git("rev-parse", "--verify", "-q", ref)).decode().strip()
        except GitError:
            return None  # no commit yet

    async def head(self) -> str | None:
        return await self._local("HEAD")

    async def modified(self, commit: str) -> set[str]:
        """The files git counts changed on disk since ``commit`` (after its conversions)."""
        out = await self.git("diff", "--name-only", "-z", "--no-renames", commit)
        return {p.decode("utf-8", "surrogateescape") for p in out.split(b"\0") if p}

    async def tree(self, commit: str) -> dict[str, TreeEntry]:
        """The regular files (and symlinks) of ``commit``, by path."""
        out = await self.git("ls-tree", "-r", "-z", "--full-tree", commit)
        entries: dict[str, TreeEntry] = {}
        for record in out.split(b"\0"):
            if not record:
                continue
            meta, path = record.split(b"\t", 1)
            mode, kind, sha = meta.decode().split()
            if kind == "blob":
                name = path.decode("utf-8", "surrogateescape")
                entries[name] = TreeEntry(name, mode, sha)
        return entries

    async def changed(self, old: str, new: str) -> list[str]:
        """The paths that differ between two commits (renames as a delete and an add)."""
        out = await self.git("diff", "--name-only", "-z", "--no-renames", old, new)
        return [p.decode("utf-8", "surrogateescape") for p in out.split(b"\0") if p]

    async def blobs(self, shas: Iterable[str]) -> dict[str, bytes]:
        """The content of each blob, by its id (one ``git cat-file --batch``)."""
        wanted = list(dict.fromkeys(shas))
        if not wanted:
            return {}
        out = await self.git(
            "cat-file", "--batch", stdin="".join(s + "\n" for s in wanted).encode()
        )
        found: dict[str, bytes] = {}
        position = 0
        for sha in wanted:
            end = out.index(b"\n", position)
            header = out[position:end].split()
            position = end + 1
            if len(header) < 3 or header[1] == b"missing":
                continue
            size = int(header[2])
            found[sha] = out[position : position + size]
            position += size + 1
        return found

    async def commit_and_push(
        self,
        changes: Mapping[str, bytes | None],
        message: str,
        expected: Mapping[str, str | None] | None = None,
        modes: Mapping[str, str] | None = None,
    ) -> str:
        """Commit ``changes`` (path -> content, ``None`` deletes) on the branch's current head
        at the server and push it, fetching again if the branch moved meanwhile; returns the
        new head. ``expected``: the blob some of the files must still have there (``None``:
        no such file), or :class:`FileMoved` is raised and nothing is pushed (their changes
        were made from what they were: made over another text, they would undo it).
        ``modes``: the git mode some files get (``100755``: executable), their content kept
        unless ``changes`` has it; the others keep theirs (a new file: ``100644``)."""
        for _attempt in range(_PUSH_TRIES):
            parent = await self.fetch()
            entries = await self.tree(parent)
            moved = {
                path
                for path, sha in (expected or {}).items()
                if (entries[path].sha if path in entries else None) != sha
            }
            if moved:
                raise FileMoved(moved)
            with tempfile.TemporaryDirectory(prefix="collab-index-") as scratch:
                env = {"GIT_INDEX_FILE": str(Path(scratch) / "index")}
                await self.git("read-tree", parent, env=env)
                lines: list[str] = []
                for path, data in changes.items():
                    if data is None:
                        lines.append(f"0 {'0' * 40}\t{path}")
                        continue
                    sha = (await self.git("hash-object", "-w", "--stdin", stdin=data)).decode()
                    mode = entries[path].mode if path in entries else "100644"
                    lines.append(f"{(modes or {}).get(path, mode)} {sha.strip()}\t{path}")
                for path, mode in (modes or {}).items():
                    if path not in changes and path in entries:
                        lines.append(f"{mode} {entries[path].sha}\t{path}")
                await self.git(
                    "update-index",
                    "-z",
                    "--index-info",
                    stdin="\0".join(lines).encode() + b"\0",
                    env=env,
                )
                tree = (await self.git("write-tree", env=env)).decode().strip()
            if tree == (await self.git("rev-parse", f"{parent}^{{tree}}")).decode().strip():
                return parent  # the branch holds the changes already (a deletion made twice)
            identity = _identity(self.user)
            made = await self.git("commit-tree", tree, "-p", parent, "-m", message, env=identity)
            commit = made.decode().strip()
            try:
                await self.git("push", "-q", "origin", f"{commit}:refs/heads/{self.branch}")
            except GitError as exc:
                if "fetch first" in str(exc) or "non-fast-forward" in str(exc):
                    continue
                raise
            await self.git("update-ref", self.remote_ref, commit)
            return commit
        raise GitError(f"{self.branch} kept moving while pushing")


def _identity(user: str | None) -> dict[str, str]:
    """Who the syncer's own commits are by: unless git's environment names someone, the
    person it syncs for, as the server names them in the commits of their live edits,
    committed by ``collab sync``."""
    name, email = "collab sync", "collab-sync@localhost"
    if user:
        name, _, rest = author_line(user).rpartition(" <")
        email = rest.removesuffix(">")
    name = os.environ.get("GIT_AUTHOR_NAME", name)
    email = os.environ.get("GIT_AUTHOR_EMAIL", email)
    return {
        "GIT_AUTHOR_NAME": name,
        "GIT_AUTHOR_EMAIL": email,
        "GIT_COMMITTER_NAME": os.environ.get("GIT_COMMITTER_NAME", "collab sync"),
        "GIT_COMMITTER_EMAIL": os.environ.get("GIT_COMMITTER_EMAIL", "collab-sync@localhost"),
    }


def _names_repo(url: str, repo: str) -> bool:
    """Whether ``url`` is some server's git address of ``repo`` (``.../git/<repo>.git``)."""
    path = url.split("?", 1)[0].rstrip("/")
    return path.endswith((f"/git/{repo}.git", f"/git/{repo}"))
