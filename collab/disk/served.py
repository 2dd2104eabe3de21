"""``collab serve --worktree REPO:BRANCH=DIR``: working trees kept in sync on the server
itself, for the tools that run there (builds, test runners, formatters). Each is the same
:class:`~collab.disk.syncer.WorkingTree` a person runs with ``collab sync``, connected to the
server over loopback as the user ``worktree``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from protocol.errors import ProtocolError
from protocol.names import validate_branch, validate_repo

from ..client import ClientError
from ..lifecycle import Lifecycle
from ..server.auth import Authenticator, Role, TokenAuthenticator
from ..store.data_lock import DataDirBusy
from .checkout import GitError
from .syncer import MAX_FILE, WorkingTree

__all__ = ["WORKTREE_USER", "ServedTrees", "WorktreeError", "WorktreeSpec", "parse_worktree"]

WORKTREE_USER = "worktree"
"""Who the server's own working trees edit as."""


@dataclass(frozen=True, slots=True)
class WorktreeSpec:
    repo: str
    branch: str
    root: Path

    def __str__(self) -> str:
        return f"{self.repo}:{self.branch}={self.root}"


class WorktreeError(Exception):
    """A working tree could not start; the message names its ``--worktree`` and why."""


def parse_worktree(text: str) -> WorktreeSpec:
    """``REPO:BRANCH=DIR``; raises ``ValueError`` naming what is wrong."""
    where, equals, folder = text.partition("=")
    repo, colon, branch = where.partition(":")
    if not equals or not colon or not folder:
        raise ValueError(f"--worktree {text!r}: expected REPO:BRANCH=DIR")
    try:
        return WorktreeSpec(validate_repo(repo), validate_branch(branch), Path(folder))
    except ProtocolError as exc:
        raise ValueError(f"--worktree {text!r}: {exc.message}") from None


class ServedTrees(Lifecycle):
    """The server's working trees, once it listens on ``host:port``:
    ``async with ServedTrees(server.auth, host, server.port, specs):``."""

    def __init__(
        self,
        auth: Authenticator,
        host: str,
        port: int,
        specs: list[WorktreeSpec],
        *,
        max_file: int = MAX_FILE,
    ) -> None:
        self.auth = auth
        self.host = host
        self.port = port
        self.specs = specs
        self.max_file = max_file  # the server's: a file it serves live is synced live
        self.trees: list[WorkingTree] = []

    async def start(self) -> None:
        """Start each working tree in turn; if one cannot start (no such repository or
        branch, a directory that is neither empty nor a checkout), stop those started and
        raise :class:`WorktreeError` (also if another syncer keeps its directory in sync)."""
        try:
            for spec in self.specs:
                await self._start(spec)
        except BaseException:
            await self.stop()
            raise

    async def _start(self, spec: WorktreeSpec) -> None:
        auth = self.auth
        token = None
        user: str | None = WORKTREE_USER
        if isinstance(auth, TokenAuthenticator):
            token = auth.mint(user=WORKTREE_USER, repo=spec.repo, role=Role.WRITE, ttl=None)
            user = None
        host = self.host
        if host in ("", "0.0.0.0", "::"):
            host = "127.0.0.1"
        url = f"ws://{host}:{self.port}"
        tree = WorkingTree(
            spec.root, url, spec.repo, spec.branch, user=user, token=token, max_file=self.max_file
        )
        try:
            await tree.start()
        except ClientError as exc:
            raise WorktreeError(f"--worktree {spec}: {exc.message}") from None
        except (GitError, DataDirBusy) as exc:
            raise WorktreeError(f"--worktree {spec}: {exc}") from None
        except OSError as exc:
            what = exc.strerror or str(exc)
            where = f": {exc.filename}" if exc.filename else ""
            raise WorktreeError(f"--worktree {spec}: {what}{where}") from None
        self.trees.append(tree)

    async def stop(self) -> None:
        while self.trees:
            await self.trees.pop().stop()
