"""Merging one branch into another in one call, live documents included.

Both branches' pending live edits are committed first, so the merge sees what people see.
The three-way merge is git's (``gitsync.merge.plan``: the tree and the conflicts
``git merge-tree`` gives); its result is recorded as a merge commit with both parents, the
target branch moves to it, and its live documents then take the move as minimal text edits
(whoever is typing there keeps their edits), as they take a push: a crash in between is
finished at the next start (``BranchSync.take_move``). On conflict nothing is applied,
unless conflict markers are asked for: then the target gets what git records (markers in
text files, a file in the way of a directory moved to ``path~branch``), and the markers are
written into the live documents, so the people on the target branch resolve them together.

A file the source renamed moves on the target as in git's tree: the target's document at
the old path is emptied (the file is gone there), and its text, the target's edits merged
in, is the new path's: a document already open there gets it as edits, any other opens
with it (seeded from the merge commit). The preview and the result name the old path of
each renamed file (``renamed_from``), and the ``ref`` event of the merge maps old paths to
new ones (``renamed``), so an editor showing the old path can open the new one.
"""

from __future__ import annotations

import contextlib
import logging
import stat
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dulwich.objects import ObjectID

from gitsync import Repositories
from gitsync.changes import shown_path
from gitsync.merge.plan import MergePlan, UnrelatedHistories, plan_merge, resolve_plan
from gitsync.objects.commits import (
    BlobEntry,
    author_line,
    combine_packs,
    fast_forward,
    land_commit,
    write_commit,
)
from gitsync.objects.fsck import file_problem, is_special_file
from protocol.errors import ErrorCode, ProtocolError
from protocol.names import is_commit_id, validate_branch

from ..live.events import hexsha
from ..server.auth import Identity
from .branch_sync import ENGINE_AUTHOR, BranchSync, LeaseBusy, fence_for
from .branches import Branches
from .work import in_git_thread, in_repo

if TYPE_CHECKING:
    from dulwich.repo import Repo

    from ..bus.lease import Grant

__all__ = ["Merges"]

log = logging.getLogger("collab.merges")

MAX_DIFF = 200_000  # characters of diff per file in a preview


class Merges:
    def __init__(self, repos: Repositories, branches: Branches) -> None:
        self.repos = repos
        self.branches = branches
        self.git = branches.git
        self.rooms = branches.rooms
        self.store = branches.store
        self.observe_merge: Callable[[float], None] | None = None
        """Called with the seconds each merge that was applied took, from the call on."""

    async def _prepare(
        self, identity: Identity, repo: str, source: str, target: str
    ) -> tuple[str, BranchSync, BranchSync]:
        repo = self.branches.check_read(identity, repo)
        source, target = validate_branch(source), validate_branch(target)
        if source == target:
            raise ProtocolError(ErrorCode.CONFLICT, "a branch cannot be merged into itself")
        await self.branches.head(repo, source)
        await self.branches.head(repo, target)
        return (
            repo,
            await self.branches.sync_of(repo, source),
            await self.branches.sync_of(repo, target),
        )

    async def _plan(
        self, repo: str, source: bytes, target: bytes, names: tuple[str, str]
    ) -> MergePlan:
        """The plan of merging commit ``source`` into ``target``; conflict markers name the
        branches, ``<<<<<<< target`` then ``>>>>>>> source``, as ``git merge-tree`` does."""
        source_name, target_name = names
        try:
            return await in_repo(
                self.repos, repo, plan_merge, source, target, labels=(target_name, source_name)
            )
        except UnrelatedHistories as exc:
            raise ProtocolError(ErrorCode.CONFLICT, f"unrelated histories: {exc}") from None

    async def preview(
        self, identity: Identity, repo: str, source: str, target: str
    ) -> dict[str, Any]:
        """What merging ``source`` into ``target`` would do; changes nothing (beyond
        committing pending live edits, as the continuous committer would anyway)."""
        repo, from_sync, to_sync = await self._prepare(identity, repo, source, target)
        names = (from_sync.branch, to_sync.branch)
        for sync in (from_sync, to_sync):  # at the branches' real heads (see _apply)
            await sync.catch_up()
        plan = await self._plan(
            repo, await from_sync.flush_everywhere(), await to_sync.flush_everywhere(), names
        )
        return await in_git_thread(self.repos, _describe, plan, diffs=True)

    async def apply(
        self,
        identity: Identity,
        repo: str,
        source: str,
        target: str,
        *,
        markers: bool,
        no_ff: bool = False,
        source_head: str | None = None,
        target_head: str | None = None,
    ) -> dict[str, Any]:
        """Merge ``source`` into ``target``. A merge the preview calls a fast-forward moves
        ``target`` to ``source``'s head, with no merge commit, unless ``no_ff`` asks for one
        (as ``git merge --no-ff`` does).

        ``source_head`` and ``target_head`` (the ``source`` and ``target`` commits a preview
        answered) make it merge only what was previewed: if either branch has moved since,
        its pending live edits committed first, nothing is changed and it fails with
        ``CONFLICT``."""
        started = time.perf_counter()
        for name, head in (("source_head", source_head), ("target_head", target_head)):
            if head is not None and not is_commit_id(head):
                raise ProtocolError(
                    ErrorCode.MALFORMED, f"{name} must be a commit id (40 hex digits)"
                )
        self.branches.check_write(
            identity, self.branches.check_read(identity, repo), validate_branch(target)
        )
        repo, from_sync, to_sync = await self._prepare(identity, repo, source, target)
        await from_sync.catch_up()
        source_head_now = await from_sync.flush_everywhere()
        _check_moved(from_sync.branch, source_head_now, source_head)
        async with contextlib.AsyncExitStack() as borrowed:
            # in a cluster, the target's edits typed on another node are committed first, too
            await to_sync.borrow_pending(borrowed)
            await borrowed.enter_async_context(to_sync.lock)
            try:  # in a cluster, under the target's lease: its ref moves fenced
                grant = await to_sync.lease_patiently()
            except LeaseBusy as exc:
                raise ProtocolError(ErrorCode.CONFLICT, f"{exc}; try again") from None
            async with to_sync.holding(grant):
                commit, forward, target_was, plan = await self._apply(
                    identity,
                    repo,
                    (from_sync, to_sync),
                    source_head_now,
                    grant,
                    markers,
                    no_ff,
                    target_head,
                )
            if commit is None:
                return {**_describe(plan, diffs=False), "applied": False, "commit": None}
        if self.observe_merge is not None:
            self.observe_merge(time.perf_counter() - started)
        how = "fast-forward to" if forward else "merge commit"
        log.info(
            "%s: %s merged %s into %s: %s %s",
            repo,
            identity.user,
            source,
            target,
            how,
            commit[:12].decode(),
        )
        self.branches.events.publish(
            repo,
            {
                "kind": "ref",
                "branch": to_sync.branch,
                "old": hexsha(target_was),
                "new": hexsha(commit),
                "cause": "merge",
                "renamed": {
                    shown_path(f.renamed_from): shown_path(f.path)
                    for f in plan.files
                    if f.renamed_from
                },
            },
        )
        described = _describe(plan, diffs=False)
        described["fast_forward"] = forward  # what was done: the preview's, unless no_ff
        return {**described, "applied": True, "commit": hexsha(commit)}

    async def _apply(
        self,
        identity: Identity,
        repo: str,
        syncs: tuple[BranchSync, BranchSync],
        source_head: bytes,
        grant: Grant | None,
        markers: bool,
        no_ff: bool,
        expected_target: str | None = None,
    ) -> tuple[bytes | None, bool, bytes, MergePlan]:
        """The merge, target's lock and lease held: (its commit, or ``None`` if there was
        nothing to merge; whether it fast-forwarded; the target's head before; the plan).
        Fails with ``CONFLICT`` if the target's head is not ``expected_target`` (when given)."""
        from_sync, to_sync = syncs
        await to_sync._commit(grant)
        # a move of the target outside the engine not merged into its documents yet is
        # merged first: the merge is made onto the branch's real head (the documents get
        # no merge the branch then cannot take)
        await to_sync.catch_up_held(grant)
        target_head = to_sync.synced
        _check_moved(to_sync.branch, target_head, expected_target)
        names = (from_sync.branch, to_sync.branch)
        plan = await self._plan(repo, source_head, target_head, names)
        if plan.up_to_date:
            return None, False, target_head, plan
        if plan.conflicts and not markers:
            raise ProtocolError(
                ErrorCode.CONFLICT,
                "merge conflicts in "
                + ", ".join(map(shown_path, plan.conflicts))
                + "; nothing was changed",
            )
        resolved = resolve_plan(plan, markers=markers)
        refused = await in_repo(self.repos, repo, _refused_by_fsck, resolved)
        if refused:
            raise ProtocolError(
                ErrorCode.CONFLICT,
                "the merge would commit "
                + ", ".join(f"{shown_path(path)} ({why})" for path, why in refused)
                + ", which git's fsck refuses; nothing was changed",
            )
        # The branch moves first, then its documents take the move, as they take a push:
        # a crash in between is finished at the next start (the move is merged into them
        # then), and one before it leaves the branch as it was. Merged into the documents
        # first, a merge a crash cut short would be in their text but not in the history.
        forward = plan.fast_forward and not no_ff
        if forward:
            await in_git_thread(self.repos, self._fast_forward, repo, to_sync.branch, plan, grant)
            commit = plan.source
        else:
            commit = await in_git_thread(
                self.repos, self._commit, repo, names, plan, resolved, identity, grant
            )
        await to_sync.take_move(commit, grant)
        return commit, forward, target_head, plan

    def _fast_forward(
        self, repo: str, branch: str, plan: MergePlan, grant: Grant | None = None
    ) -> None:
        git = self.repos.open(repo)
        with fence_for(git, branch, grant):
            fast_forward(git, branch, plan.target, plan.source)

    def _commit(
        self,
        repo: str,
        names: tuple[str, str],
        plan: MergePlan,
        resolved: dict[str, BlobEntry | None],
        identity: Identity,
        grant: Grant | None = None,
    ) -> bytes:
        git = self.repos.open(repo)
        source, branch = names
        message = f"Merge branch '{source}' into {branch}\n"
        if plan.conflicts:
            message += "\nConflicts left for resolution:\n" + "".join(
                f"  {shown_path(path)}\n" for path in plan.conflicts
            )
        # written outside the target's fence, which only its move needs (see
        # BranchSync._write)
        written = write_commit(
            git,
            branch,
            resolved,
            message=message,
            author=author_line(identity.user),
            committer=ENGINE_AUTHOR,
            expected=plan.target,
            extra_parents=[plan.source],
            allow_empty=True,
        )
        with fence_for(git, branch, grant):
            land_commit(git, branch, written, plan.target)
        combine_packs(git)
        return written.id


def _refused_by_fsck(git: Repo, resolved: dict[str, BlobEntry | None]) -> list[tuple[str, str]]:
    """The files of a merge's result that git's fsck refuses, with why: a ``.gitmodules`` or
    ``.gitattributes`` made of two sides that each pass (a section renamed on one, a URL
    that reads as an option set on the other)."""
    refused = []
    for path, entry in resolved.items():
        if entry is None or not stat.S_ISREG(entry.mode) or not is_special_file(path):
            continue
        stored = entry.data
        data = stored if stored is not None else git[ObjectID(entry.sha)].as_raw_string()
        problem = file_problem(path, data)
        if problem is not None:
            refused.append((path, f"{problem.msg_id}: {problem.message}"))
    return refused


def _check_moved(branch: str, head: bytes | None, expected: str | None) -> None:
    """``CONFLICT`` if ``branch``'s ``head`` is not the ``expected`` commit (when given): it
    has moved since the preview, whose merge is then not the one that would be applied."""
    if expected is not None and hexsha(head) != expected:
        now = (hexsha(head) or "none")[:12]
        raise ProtocolError(
            ErrorCode.CONFLICT,
            f"branch {branch!r} has changed since the preview ({expected[:12]}, now {now}); "
            "nothing was changed: preview again",
        )


def _describe(plan: MergePlan, *, diffs: bool) -> dict[str, Any]:
    """The plan as a reply. A file name that is not UTF-8 (git takes any bytes) is given with
    each byte that is not written ``\\xNN`` (see ``shown_path``)."""
    files = []
    for f in plan.files:
        entry: dict[str, Any] = {
            "path": shown_path(f.path),
            "status": f.status,
            "binary": f.binary,
        }
        if f.renamed_from is not None:
            entry["renamed_from"] = shown_path(f.renamed_from)
        if diffs:
            entry["diff"] = shown_path(f.diff(MAX_DIFF))
        files.append(entry)
    return {
        "source": hexsha(plan.source),
        "target": hexsha(plan.target),
        "base": hexsha(plan.base),
        "up_to_date": plan.up_to_date,
        "fast_forward": plan.fast_forward,
        "conflicts": [shown_path(path) for path in plan.conflicts],
        "files": files,
    }
