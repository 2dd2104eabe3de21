"""Stored documents of another history: the branches whose documents the store holds while
their repository has no record of the commit those documents matched, found with one listing
of the store per repository.

A branch's documents start at its head on its first use, where its repository holds no synced
record of it (``refs/collab/synced/<branch>``, made before any document of it is stored). So
the store's documents of a branch the repository has no record of were made from another
history: the repository was replaced while the server was stopped or killed (by a plain
``git clone``, which leaves ``refs/collab/*`` behind; by an unrelated repository of the same
name; by another ``--repos`` over the same data directory). Taken to match the head, their
older text would be committed over the newer commits. ``GitSync`` asks :class:`Unrecorded`
before a branch starts at its head, and before a branch is made, and rescues such documents
instead (``BranchSync._reconcile``, ``GitSync.forget_deleted``).

Asking the store on every branch's first use would cost a round trip for every new branch (on
a Redis node, every person's own branch that ``branch.join`` makes: at 200 documents with two
stock clients each, enough to keep new clients from syncing). Instead the store is listed once
per repository, on its first use after start (and again once its directory was replaced by
another, :meth:`gitsync.repos.Repositories.identity`), and the branches found with documents
and no record the repository can resolve are kept in memory, as its *suspects*. A branch that
is no suspect starts at its head without asking the store; only a suspect is asked about again
(:meth:`Unrecorded.confirm`), which a branch is only in a replaced repository.

Why the suspects, read once, stay right while the server runs (on one node or several):

- The store is listed first, the records read after. A document listed was stored after its
  branch's record was made (by whichever node first used or made the branch), so a branch in
  use is read with its record: no suspect. A record removed between the two reads is that of
  a branch deleted through the engine, whose documents are deleted before its records: a
  suspect with nothing stored, which its confirmation clears.
- Documents stored after the listing, by this node or by another node of a cluster, are of
  branches with a record (made before them), or of a suspect already (opened before its
  catch-up): none is of another history unknown here, so none is missed.
  The only way documents lose their record while the server runs is their repository's
  directory replaced under it: its identity changes, and its next use lists the store again.
- A suspect's record, once made, is read before the suspects are consulted: when a node's
  catch-up finds the documents' commit unknown and makes them read as the head, it records the
  head as synced (other nodes read that record, and their suspect is moot); this node clears
  its own (:meth:`Unrecorded.clear`), as it does when the branch is forgotten (its documents
  deleted). A suspect another node settled by deleting its documents is cleared here by the
  confirmation, which finds none.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dulwich.repo import Repo

from gitsync import read_synced
from gitsync.repos import Repositories, is_stored
from protocol.errors import ProtocolError
from protocol.names import DocId

from .work import in_git_thread

if TYPE_CHECKING:
    from ..store.base import Store

__all__ = ["NAMED", "RepoIdentity", "Scan", "Unrecorded", "recorded"]

log = logging.getLogger(__name__)

NAMED = 20
"""At most this many suspects are named in the log line of a listing."""

RepoIdentity = tuple[int, int]
"""Which directory a repository is (``Repositories.identity``)."""


@dataclass(slots=True)
class Scan:
    """What one listing of the store found of a repository: the directory it was read in
    (``None``: the store could not be listed, nothing is known), and the branches with stored
    documents and no synced record there that names a commit the repository holds."""

    identity: RepoIdentity | None
    suspects: set[str] = field(default_factory=set)


def recorded(repo: Repo, branch: str) -> bool:
    """Whether ``repo`` records the commit ``branch``'s live documents matched, and holds it."""
    synced = read_synced(repo, branch)
    return synced is not None and is_stored(repo, synced)


class Unrecorded:
    """Each repository's :class:`Scan`, made on its first use (see the module's docstring)."""

    def __init__(self, repos: Repositories, store: Store) -> None:
        self.repos = repos
        self.store = store
        self._scans: dict[str, Scan] = {}
        self._scanning: dict[str, asyncio.Task[Scan]] = {}

    async def scan(self, repo: str, identity: RepoIdentity | None = None) -> Scan:
        """``repo``'s scan: listed on its first use, and again if ``identity`` (its directory
        as just read) is not the one it was made in. Raises ``RepoNotFound``."""
        held = self._scans.get(repo)
        if held is not None and identity in (None, held.identity):
            return held
        task = self._scanning.get(repo)
        if task is not None:  # (begun before the caller read its identity, maybe)
            found = await asyncio.shield(task)
            if identity in (None, found.identity):
                return found
        return await asyncio.shield(self._begin(repo))

    def _begin(self, repo: str) -> asyncio.Task[Scan]:
        task = self._scanning.get(repo)
        if task is None or task.done():
            task = asyncio.create_task(self._list(repo), name=f"unrecorded documents of {repo}")
            self._scanning[repo] = task

            def done(finished: asyncio.Task[Scan]) -> None:
                if self._scanning.get(repo) is finished:
                    del self._scanning[repo]

            task.add_done_callback(done)
        return task

    async def _list(self, repo: str) -> Scan:
        try:
            keys = await self.store.keys(f"{repo}/")  # first: see the module's docstring
        except Exception as exc:  # a damaged store file: served as it is, asked again later
            log.warning(
                "%s: the store cannot list its documents (%s): those of another history "
                "are not looked for",
                repo,
                exc,
            )
            return Scan(None)
        branches: set[str] = set()
        for key in keys:
            try:
                branches.add(DocId.parse(key).branch)
            except ProtocolError:
                continue
        scan = await in_git_thread(self.repos, self._read, repo, branches)
        self._scans[repo] = scan
        if scan.suspects:
            named = sorted(scan.suspects)
            log.info(
                "%s: the store holds documents of %d branch%s the repository has no record "
                "of (each is looked at on its first use): %s%s",
                repo,
                len(named),
                "" if len(named) == 1 else "es",
                ", ".join(named[:NAMED]),
                "" if len(named) <= NAMED else ", ...",
            )
        return scan

    def _read(self, repo: str, branches: set[str]) -> Scan:
        identity = self.repos.identity(repo)
        git = self.repos.open(repo)
        return Scan(identity, {branch for branch in branches if not recorded(git, branch)})

    async def confirm(self, repo: str, branch: str) -> bool:
        """Whether the store still holds documents of the suspect ``branch`` (one look-up of
        its own); if not, it is a suspect no more."""
        if await self.store.keys(f"{repo}/{branch}:"):
            return True
        self.clear(repo, branch)
        return False

    def clear(self, repo: str, branch: str) -> None:
        """``branch`` is a suspect no more: its documents were made to read as its head, and
        that recorded as synced, or they were deleted."""
        held = self._scans.get(repo)
        if held is not None:
            held.suspects.discard(branch)
