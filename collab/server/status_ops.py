"""``server.status`` and ``branch.log``: what a running server serves, and a branch's recent
commits, for people and tools that should not need the git CLI inside the data directory.

===============  ======================  ===============================================
operation        arguments               value
===============  ======================  ===============================================
server.status    repo?                   the server, and each repository the caller may
                                         read: branches, heads, last commits, who is on
                                         them; live documents and connections
branch.log       repo, branch?, limit?   the branch's recent commits, newest first
===============  ======================  ===============================================
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from gitsync import RepoNotFound, Repositories
from gitsync.objects.history import commit_info, recent_commits
from protocol.errors import ErrorCode, ProtocolError
from protocol.names import validate_branch, validate_repo

from ..git.branch_sync import GitSync
from ..git.branches import Branches
from ..git.work import in_repo
from ..live.rooms import Rooms, people_in
from ..live.traffic import Traffic
from .auth import Authenticator
from .ops import CallContext, Operations, arg_int, arg_opt_str, arg_str

__all__ = ["MAX_LOG", "StatusSources", "engine_version", "register_status_ops"]

MAX_LOG = 500
"""The most commits one ``branch.log`` returns."""


def engine_version() -> str:
    """The installed package's version (``unknown`` when run from a source tree alone)."""
    try:
        return metadata.version("collab-engine")
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True, slots=True)
class StatusSources:
    """What ``server.status`` reports on, given by the composition root."""

    auth: Authenticator
    repos: Repositories
    rooms: Rooms
    git: GitSync
    store: str
    """The kind of store (``ServerConfig.store``)."""
    connections: tuple[Traffic, ...]
    """The counters of the endpoints whose open connections are counted."""
    uptime: Callable[[], float]
    """Seconds since the server started serving."""


def register_status_ops(ops: Operations, branches: Branches, server: StatusSources) -> None:
    """Add ``server.status`` and ``branch.log`` to ``ops``."""

    async def status(ctx: CallContext, args: dict[str, Any]) -> Any:
        only = arg_opt_str(args, "repo")
        names = [validate_repo(only)] if only is not None else server.repos.names()
        readable = [name for name in names if ctx.identity.can_read(name)]
        if only is not None and not readable:
            raise ProtocolError(ErrorCode.FORBIDDEN, f"no access to repository {only!r}")
        repositories = []
        for name in readable:
            repositories.append(await _repository(ctx, name))
        rooms = [
            {
                "doc": room.key,
                "users": sorted({peer.identity.user for peer in people_in(room)}),
            }
            for room in server.rooms.loaded()
            if room.doc_id.repo in readable
        ]
        return {"server": _server(server), "repositories": repositories, "rooms": rooms}

    async def _repository(ctx: CallContext, name: str) -> dict[str, Any]:
        listed = await branches.list_branches(ctx.identity, name)
        heads = [branch["head"].encode() for branch in listed]

        def last_commits(repo: Any) -> list[dict[str, Any]]:
            return [commit_info(repo[head]).as_dict() for head in heads]

        commits = await in_repo(server.repos, name, last_commits)
        for branch, commit in zip(listed, commits, strict=True):
            branch["last_commit"] = commit
        return {
            "name": name,
            "default_branch": await branches.default_branch(name),
            "branches": listed,
        }

    async def log(ctx: CallContext, args: dict[str, Any]) -> Any:
        repo = branches.check_read(ctx.identity, arg_str(args, "repo"))
        name = arg_opt_str(args, "branch")
        try:
            branch = validate_branch(name or await branches.default_branch(repo))
        except RepoNotFound:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no repository {repo!r}") from None
        limit = arg_int(args, "limit", 20)
        if not 0 < limit <= MAX_LOG:
            raise ProtocolError(ErrorCode.MALFORMED, f"limit must be from 1 to {MAX_LOG}")
        head = await branches.git_flush(repo, branch, await branches.head(repo, branch))
        commits = await in_repo(server.repos, repo, recent_commits, head, limit)
        return {
            "repo": repo,
            "branch": branch,
            "head": head.decode(),
            "commits": [c.as_dict() for c in commits],
        }

    ops.register("server.status", status, ("repo",))
    ops.register("branch.log", log, ("repo", "branch", "limit"))


def _server(server: StatusSources) -> dict[str, Any]:
    return {
        "version": engine_version(),
        "dev_mode": server.auth.dev_mode,
        "uptime": round(server.uptime(), 3),
        "store": server.store,
        "rooms": len(server.rooms),
        "connections": {traffic.endpoint: len(traffic.open) for traffic in server.connections},
        "damaged": len(server.rooms.damaged),
        "held": len(server.git.held_files()),
        "time": int(time.time()),
    }
