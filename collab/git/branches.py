"""Branch operations on live repositories: participant branches, create, fork, delete, list.

Permissions (see ``Identity.can_write_branch``): anyone who may read a repository may read
every branch of it, and write their own participant branch and the branches they fork from
it (named ``<own branch>-...``); writing any other branch takes the ``write`` role.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from dulwich.objects import Commit, ObjectID, Tag
from pycrdt import Doc

from gitsync import BranchNotFound, RepoNotFound, Repositories
from gitsync.changes import read_blob
from gitsync.naming import PARTICIPANT_PREFIX, is_participant_branch
from gitsync.objects.commits import (
    HEADS,
    BranchExists,
    RefMoved,
    branch_heads,
    create_branch,
    delete_branch,
    head_target,
    read_ref,
    set_synced,
)
from gitsync.objects.fsck import file_problem
from gitsync.objects.ref_names import RefClash, new_ref_problem
from gitsync.wire.fetch_plan import fetchable
from protocol.errors import ErrorCode, ProtocolError
from protocol.names import DocId, is_commit_id, validate_branch, validate_repo

from ..live.events import EventHub, hexsha
from ..live.origin import Origin
from ..live.room import Room, Subscriber
from ..live.rooms import Rooms, people_in
from ..server.auth import Identity
from ..store.base import Store
from .branch_sync import STORE_WAIT, BranchSync, GitSync, LeaseBusy
from .work import in_git_thread, in_repo

__all__ = ["Branches"]

log = logging.getLogger("collab.branches")

MAX_JOINED = 4096
"""(repository, own branch) pairs remembered as existing, the least recently joined forgotten
first."""
JOINED_FOR = 60.0
"""Seconds an own branch is taken to exist without a look: another tool may delete it unseen
(a deletion the engine makes, or sees, is forgotten at once)."""


class Branches:
    """Branch-level operations, with permission checks and events."""

    def __init__(
        self,
        repos: Repositories,
        rooms: Rooms,
        store: Store,
        git: GitSync,
        events: EventHub,
    ) -> None:
        self.repos = repos
        self.rooms = rooms
        self.store = store
        self.git = git
        self.events = events
        # (repo, own branch) known to exist, and when that was last looked at; most recently
        # joined last, bounded
        self._joined: collections.OrderedDict[tuple[str, str], float] = collections.OrderedDict()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.open_elsewhere: Callable[[str, str], Awaitable[list[str]]] | None = None
        """In a cluster: the other nodes where documents of ``(repo, branch)`` are open."""
        self.opens_held_elsewhere: (
            Callable[[str, str], contextlib.AbstractAsyncContextManager[None]] | None
        ) = None
        """In a cluster: holds the other nodes' opens of documents of ``(repo, branch)`` for
        a block, entered once each has said what it has open (``Cluster.opens_held``)."""
        rooms.on_join.append(self._on_join)
        rooms.on_leave.append(self._on_leave)
        git.on_deleted.append(self._forget_joined)

    async def start(self) -> None:
        """Nothing to start: a service so that the server stops it before the git work."""

    async def stop(self) -> None:
        """Wait for the own branches still being made for people who opened a document.
        Left running, one would commit the branch it starts from after the final commits,
        and after the clean-shutdown marker was decided on."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- checks ------------------------------------------------------------------------------

    def check_read(self, identity: Identity, repo: str) -> str:
        repo = validate_repo(repo)
        if not identity.can_read(repo):
            raise ProtocolError(ErrorCode.FORBIDDEN, f"no access to repository {repo!r}")
        return repo

    def check_write(self, identity: Identity, repo: str, branch: str) -> None:
        if not identity.can_write_branch(repo, branch):
            raise ProtocolError(
                ErrorCode.READ_ONLY, f"{identity.user} may not write branch {branch!r}"
            )

    def check_create(self, identity: Identity, repo: str, branch: str) -> None:
        why = identity.why_not_create(repo, branch)
        if why is not None:
            raise ProtocolError(ErrorCode.FORBIDDEN, why)

    async def head(self, repo: str, branch: str) -> bytes:
        try:
            head = await in_git_thread(self.repos, self.git.head, repo, branch)
        except RepoNotFound:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no repository {repo!r}") from None
        if head is None:
            empty = not await in_git_thread(self.repos, lambda: branch_heads(self.repos.open(repo)))
            hint = f": it has no commits yet; push a first one to /git/{repo}.git" if empty else ""
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no branch {branch!r} in {repo!r}{hint}")
        return head

    async def default_branch(self, repo: str) -> str:
        def read() -> str:
            target = head_target(self.repos.open(repo)) or b"refs/heads/main"
            return target.removeprefix(b"refs/heads/").decode("utf-8")

        return await in_git_thread(self.repos, read)

    # -- presence and participant branches ---------------------------------------------------

    def _on_join(self, room: Room, peer: Subscriber) -> None:
        doc = room.doc_id
        identity = peer.identity
        self.events.publish(
            doc.repo,
            {
                "kind": "presence",
                "user": identity.user,
                "branch": doc.branch,
                "path": doc.path,
                "action": "join",
            },
        )
        joined = (doc.repo, identity.own_branch)
        now = time.monotonic()
        looked = self._joined.get(joined)
        if looked is not None:
            self._joined.move_to_end(joined)
            if now - looked < JOINED_FOR:
                return
        self._joined[joined] = now
        if len(self._joined) > MAX_JOINED:
            self._joined.popitem(last=False)
        task = asyncio.create_task(self._ensure_quietly(identity, doc.repo, doc.branch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _forget_joined(self, repo: str, branch: str) -> None:
        """``branch`` was deleted: if it was someone's own, the next document they open makes
        it again."""
        self._joined.pop((repo, branch), None)

    def _on_leave(self, room: Room, peer: Subscriber) -> None:
        doc = room.doc_id
        self.events.publish(
            doc.repo,
            {
                "kind": "presence",
                "user": peer.identity.user,
                "branch": doc.branch,
                "path": doc.path,
                "action": "leave",
            },
        )

    async def _ensure_quietly(self, identity: Identity, repo: str, base: str) -> None:
        try:
            await self.join(identity, repo, base, catch_up=False)
        except ProtocolError as exc:  # (another node kept the base's lease, say)
            log.warning("creating the branch of %s in %s failed: %s", identity.user, repo, exc)
        except Exception:
            log.exception("creating the branch of %s in %s failed", identity.user, repo)

    async def join(
        self, identity: Identity, repo: str, base: str | None = None, *, catch_up: bool = True
    ) -> dict[str, Any]:
        """Make sure ``identity`` has its own branch in ``repo`` (created from ``base``, by
        default the default branch); returns it. ``catch_up``: from ``base``'s real head (a
        move of it outside the engine merged into its documents first; see ``git_flush``)."""
        repo = self.check_read(identity, repo)
        name = identity.own_branch
        if base is not None:  # one that does not exist is refused, whether or not it is used
            await self.head(repo, validate_branch(base))
        existing = await in_git_thread(self.repos, self.git.head, repo, name)
        if existing is not None:
            return {"name": name, "head": hexsha(existing), "created": False}
        start = await self.head(repo, validate_branch(base or await self.default_branch(repo)))
        if base is not None:
            start = await self.git_flush(repo, base, start, catch_up=catch_up)
        await self.git.forget_clashing(repo, name, namesake=True)
        try:
            await in_git_thread(self.repos, self._create, repo, name, start)
        except BranchExists:
            head = await self.head(repo, name)
            return {"name": name, "head": hexsha(head), "created": False}
        except RefClash as exc:  # a branch the repository was given holds the name's place
            raise ProtocolError(
                ErrorCode.CONFLICT, f"cannot create your branch {name!r}: {exc}"
            ) from None
        self._ref_event(repo, name, None, start, "create")
        log.info("%s: created the branch %s for %s", repo, name, identity.user)
        return {"name": name, "head": hexsha(start), "created": True}

    async def git_flush(
        self, repo: str, branch: str, head: bytes, *, catch_up: bool = True
    ) -> bytes:
        """Commit the branch's pending live edits, if it has live documents (with
        ``catch_up``, a move of the branch outside the engine merged into them first); its
        head."""
        sync = self.git.branches.get((repo, branch))
        if sync is None and self.git.leases is not None:  # edits may be pending on another node
            sync = await self.sync_of(repo, branch)
        if sync is None:
            return head
        if catch_up:
            await sync.catch_up()
        return await sync.flush_everywhere()

    def _create(self, repo: str, name: str, at: bytes) -> None:
        git = self.repos.open(repo)
        create_branch(git, name, at)
        set_synced(git, name, at)  # over any leftover of a deleted namesake

    def _ref_event(
        self, repo: str, branch: str, old: bytes | None, new: bytes | None, cause: str
    ) -> None:
        self.events.publish(
            repo,
            {
                "kind": "ref",
                "branch": branch,
                "old": hexsha(old),
                "new": hexsha(new),
                "cause": cause,
            },
        )

    # -- operations --------------------------------------------------------------------------

    async def list_branches(self, identity: Identity, repo: str) -> list[dict[str, Any]]:
        repo = self.check_read(identity, repo)
        try:
            heads = await in_git_thread(self.repos, lambda: branch_heads(self.repos.open(repo)))
        except RepoNotFound:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no repository {repo!r}") from None
        people: dict[str, list[dict[str, str]]] = {}
        for room in self.rooms.loaded(f"{repo}/"):
            for peer in people_in(room):
                who = getattr(peer, "identity", None)
                if isinstance(who, Identity):
                    people.setdefault(room.doc_id.branch, []).append(
                        {"user": who.user, "path": room.doc_id.path}
                    )
        # what depends on the caller only, worked out once, not once per branch (thousands)
        own, writable = identity.own_branch, identity.branch_writability(repo)
        return [
            {
                "name": name,
                "head": hexsha(head),
                "participant": is_participant_branch(name),
                "mine": name == own,
                "writable": writable(name),
                "people": sorted(people.get(name, []), key=lambda p: (p["user"], p["path"])),
            }
            for name, head in sorted(heads.items())
        ]

    async def create(
        self, identity: Identity, repo: str, name: str, source: str | None
    ) -> dict[str, Any]:
        repo = self.check_read(identity, repo)
        name = validate_branch(name)
        self.check_create(identity, repo, name)
        self.check_write(identity, repo, name)
        source = source or await self.default_branch(repo)
        start = await in_git_thread(self.repos, self._tag_or_commit, repo, source)
        if start is None:  # a branch: at its live state
            source = validate_branch(source)
            start = await self.git_flush(repo, source, await self.head(repo, source))
        await self._create_checked(repo, name, start)
        self._ref_event(repo, name, None, start, "create")
        log.info(
            "%s: %s created the branch %s from %s at %s",
            repo,
            identity.user,
            name,
            source,
            start[:12].decode(),
        )
        return {"name": name, "head": hexsha(start)}

    def _tag_or_commit(self, repo: str, source: str) -> bytes | None:
        """The commit ``source`` names if it is no branch's name but a tag's (``v1``, or
        ``refs/tags/v1``; an annotated tag peeled) or a commit's full id; ``None`` for a
        branch's name (or nothing the repository holds: the branch lookup says so). A tag
        of something else (a blob, a tree) is refused (``NOT_FOUND``): no branch can start
        there.

        A commit id counts only if a ref that fetches see reaches it, as a fetch by id asks
        (``fetchable``): a commit a force push or a deletion left behind, or one only the
        server's private refs reach, is no more to be had by making a branch of it than by
        fetching it (nor is it said to exist)."""
        git = self.repos.open(repo)
        branch, tag = _ref_name(source), _ref_name(source.removeprefix("refs/tags/"))
        if branch is not None and read_ref(git, HEADS + branch) is not None:
            return None
        target = None if tag is None else read_ref(git, b"refs/tags/" + tag)
        by_id = target is None and is_commit_id(source)
        if by_id:
            target = source.encode("ascii")
        if target is None:
            return None
        if by_id and not fetchable(self.repos.path_of(repo), target):
            return None  # what a fetch of it says: no such thing to be had
        what = "the id" if by_id else "the tag"
        try:
            obj = git[ObjectID(target)]
            while isinstance(obj, Tag):
                obj = git[obj.object[1]]
        except KeyError:
            raise ProtocolError(
                ErrorCode.NOT_FOUND, f"{what} {source!r} names an object the repository lacks"
            ) from None
        if not isinstance(obj, Commit):
            raise ProtocolError(
                ErrorCode.NOT_FOUND,
                f"{what} {source!r} names a {obj.type_name.decode()}, not a commit: no branch "
                "can start there",
            )
        return bytes(obj.id)

    async def _create_checked(self, repo: str, name: str, start: bytes) -> None:
        await self.git.forget_clashing(repo, name, namesake=True)
        try:
            await in_git_thread(self.repos, self._create, repo, name, start)
        except BranchExists as exc:
            raise ProtocolError(ErrorCode.CONFLICT, str(exc)) from None
        except RefClash as exc:
            raise ProtocolError(ErrorCode.CONFLICT, f"cannot create {name!r}: {exc}") from None
        except (OSError, ValueError, KeyError) as exc:  # a ref name clashing with a directory
            raise ProtocolError(ErrorCode.CONFLICT, f"cannot create {name!r}: {exc}") from None

    async def fork(
        self, identity: Identity, repo: str, source: str, name: str | None
    ) -> dict[str, Any]:
        """Fork ``source`` at its live state into ``name``; the fork's documents start with
        the source documents' CRDT history, so edits never duplicate between them."""
        repo = self.check_read(identity, repo)
        source = validate_branch(source)
        if name is None:
            name = await self._fork_name(repo, identity.own_branch)
        name = validate_branch(name)
        self.check_create(identity, repo, name)
        self.check_write(identity, repo, name)
        await self.head(repo, source)
        sync = await self.sync_of(repo, source)
        prefix = f"{repo}/{source}:"
        loaded: tuple[dict[str, bytes], dict[str, str]] | None = None

        def snapshot() -> None:
            nonlocal loaded
            loaded = self._capture_loaded(prefix)

        async with contextlib.AsyncExitStack() as borrowed:
            # in a cluster, edits typed on another node are taken, too (loaded first)
            await sync.borrow_pending(borrowed)
            async with sync.lock:
                try:  # in a cluster, the source's commit is made under its lease, as any
                    grant = await sync.lease_patiently()
                except LeaseBusy as exc:
                    raise ProtocolError(ErrorCode.CONFLICT, f"{exc}; try again") from None
                async with sync.holding(grant):
                    # a move of the source outside the engine is merged in first: the fork
                    # starts at the source's real head
                    await sync.catch_up_held(grant)
                    # The documents not loaded are read first: one opened while they are read
                    # (and typed in) is in the snapshot below, taken as it is then.
                    unloaded: dict[str, bytes] = {}
                    await self._capture_stored(prefix, unloaded, self.rooms.keys(prefix))
                    # The fork starts at the commit of the very text its documents are copied
                    # with, taken together: text typed between a commit and a copy would be the
                    # fork's own change, and the source's too once it commits it, and merging
                    # the fork back would conflict on it. (Nothing pending: the commit returns
                    # with no await.)
                    await sync._commit(grant, on_snapshot=snapshot)
                    if loaded is None:
                        snapshot()
                    assert loaded is not None
                    start = sync.synced
                    states, texts = loaded
                    for path, state in unloaded.items():
                        states.setdefault(path, state)
                    # those that were loaded at the first look and unloaded before the snapshot
                    await self._capture_stored(prefix, states)
                    # Nobody loads a document of the fork until it holds the source's history:
                    # one seeded from the fork's files meanwhile would hold its text twice.
                    if (repo, name) in self.git.forming:
                        raise ProtocolError(
                            ErrorCode.CONFLICT, f"{name!r} is being made by another fork"
                        )
                    forming = self.git.forming[(repo, name)] = asyncio.Event()
                    try:
                        await self._create_checked(repo, name, start)
                        target = f"{repo}/{name}:"
                        for path, state in states.items():
                            await self.store.append(target + path, state)
                    finally:
                        forming.set()
                        self.git.forming.pop((repo, name), None)
        self._ref_event(repo, name, None, start, "fork")
        log.info(
            "%s: %s forked %s into %s at %s (%d live documents)",
            repo,
            identity.user,
            source,
            name,
            start[:12].decode(),
            len(states),
        )
        fork_sync = await self.sync_of(repo, name)
        committed = await in_git_thread(self.repos, self._blob_texts, repo, start, list(texts))
        for path, text in texts.items():  # not committed with the rest (a commit held back)
            if committed.get(path) != text:
                async with self.rooms.borrow(DocId.parse(target + path)) as room:
                    fork_sync.touch(room, Origin.CLIENT, None)
        return {"name": name, "head": hexsha(start), "source": source}

    async def sync_of(self, repo: str, branch: str) -> BranchSync:
        try:
            return await self.git.branch(repo, branch)
        except (RepoNotFound, BranchNotFound):
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no branch {branch!r} in {repo!r}") from None

    async def _fork_name(self, repo: str, own: str) -> str:
        """The first name ``<own>-fork-N`` that no branch holds, nor keeps from being made
        (a branch below it, ``<own>-fork-N/x``, or one it would be below)."""

        def free() -> str:
            git = self.repos.open(repo)
            # each branch keeps at most one N from being made (the one it is below); past
            # as many as there are refs, what keeps the names out keeps them all out (a
            # branch above them: ``people``)
            tries = len(git.refs.allkeys()) + 1
            problem = None
            for n in range(1, tries + 1):
                ref = HEADS + f"{own}-fork-{n}".encode()
                if read_ref(git, ref) is None:
                    problem = new_ref_problem(git.refs, ref)
                    if problem is None:
                        return f"{own}-fork-{n}"
            raise ProtocolError(
                ErrorCode.CONFLICT, f"no fork of {own!r} can be made: {problem or 'names taken'}"
            )

        return await in_git_thread(self.repos, free)

    def _capture_loaded(self, prefix: str) -> tuple[dict[str, bytes], dict[str, str]]:
        """Every loaded document below ``prefix``: its full CRDT state and its text."""
        states: dict[str, bytes] = {}
        texts: dict[str, str] = {}
        for room in self.rooms.loaded(prefix):
            states[room.doc_id.path] = room.doc.get_update()
            texts[room.doc_id.path] = str(room.text)
        return states, texts

    async def _capture_stored(
        self, prefix: str, states: dict[str, bytes], skip: Collection[str] = ()
    ) -> None:
        """Add to ``states`` the full CRDT state of every stored document below ``prefix``
        not in it already, nor one of the keys ``skip``."""
        for key in await self.store.keys(prefix):
            path = key[len(prefix) :]
            if path in states or key in skip:
                continue
            stored = await self.store.load(key)
            if stored is None or stored.empty:
                continue
            if stored.corrupt is not None:  # never fork a damaged history
                raise ProtocolError(
                    ErrorCode.DAMAGED, f"{key}: its stored history is damaged; repair it first"
                )
            doc: Doc[Any] = Doc()
            stored.apply_to(doc)
            states[path] = doc.get_update()

    def _blob_texts(self, repo: str, commit: bytes, paths: list[str]) -> dict[str, str]:
        out = {}
        git = self.repos.open(repo)
        for path in paths:
            blob = read_blob(git, commit, path)
            if blob is not None:
                out[path] = blob.decode("utf-8", "replace")
        return out

    async def delete(self, identity: Identity, repo: str, name: str) -> dict[str, Any]:
        repo = self.check_read(identity, repo)
        name = validate_branch(name)
        self.check_write(identity, repo, name)
        if name == await self.default_branch(repo):
            raise ProtocolError(ErrorCode.FORBIDDEN, f"{name!r} is the default branch")
        if name.startswith(PARTICIPANT_PREFIX) and not identity.owns_branch(repo, name):
            raise ProtocolError(
                ErrorCode.FORBIDDEN,
                f"{name!r} is another person's branch: only its owner may delete it",
            )
        # Nobody opens one of its documents from the look below until it is deleted (or
        # not): one opened in between would be closed under its user, who had typed in it;
        # on another node, typed in, it would write the branch back.
        async with (
            self.rooms.opens_held(f"{repo}/{name}:"),
            self._opens_held_elsewhere(repo, name),
        ):
            busy = await self.why_open(repo, name)
            if busy is not None:
                raise ProtocolError(ErrorCode.CONFLICT, busy)
            head = await self.head(repo, name)
            sync = self.git.branches.get((repo, name))
            if sync is not None:
                head = await sync.flush()
            await self._refuse_uncommitted(repo, name, head)
            if sync is not None:
                sync.deleting = True
            try:
                await in_git_thread(self.repos, self._delete, repo, name, head)
            except RefMoved as exc:
                if sync is not None:
                    sync.deleting = False
                raise ProtocolError(ErrorCode.CONFLICT, f"{name!r} moved: {exc}") from None
            await self.git.forget_deleted(repo, name, how=f"by {identity.user} (branch.delete)")
        self._ref_event(repo, name, head, None, "delete")
        log.info(
            "%s: %s deleted the branch %s (it was at %s)",
            repo,
            identity.user,
            name,
            head[:12].decode(),
        )
        return {"name": name, "head": hexsha(head)}

    async def forget_deleted(self, repo: str, name: str) -> None:
        """A push deleted the branch ``name``: forget what the engine kept of it, as
        :meth:`delete` does (a branch made again under its name, or one below it, starts
        afresh)."""
        if await in_git_thread(self.repos, self.git.head, repo, name) is not None:
            return  # made again meanwhile
        await self.git.forget_deleted(repo, name, how="by a push")

    async def why_open(self, repo: str, name: str) -> str | None:
        """Why the branch may not be deleted now: someone has one of its documents open (or
        is opening one), on this node or another; None if no one has."""
        if self.rooms.in_use(f"{repo}/{name}:"):
            return f"{name!r} has open documents"
        if self.open_elsewhere is not None and (nodes := await self.open_elsewhere(repo, name)):
            return f"{name!r} has open documents (on node {', '.join(nodes)})"
        return None

    def _opens_held_elsewhere(
        self, repo: str, name: str
    ) -> contextlib.AbstractAsyncContextManager[None]:
        if self.opens_held_elsewhere is None:
            return contextlib.nullcontext()
        return self.opens_held_elsewhere(repo, name)

    async def _refuse_uncommitted(self, repo: str, name: str, head: bytes) -> None:
        """In a cluster, refuse (``CONFLICT``) to delete the branch ``name`` at ``head`` while
        the shared store holds a document of it whose text ``head`` lacks: edits another
        node has not committed yet (its room of the document lingers, or waits for the
        branch's lease). Deleted now, the branch would be written back by that node, or
        its edits kept on a branch of their own. A text git's fsck refuses, never committed,
        does not count: it is kept on a branch of its own, as on one node (where the edits
        of a document no one has open were committed before it unloaded)."""
        if self.git.leases is None:
            return
        prefix = f"{repo}/{name}:"
        try:
            async with asyncio.timeout(STORE_WAIT):  # (the store waits for Redis longer)
                for key in await self.store.keys(prefix):
                    stored = await self.git.stored_text(key)
                    path = key[len(prefix) :]
                    text = None if stored is None else stored.encode("utf-8")
                    if text is None or file_problem(path, text) is not None:
                        continue
                    blob = await in_repo(self.repos, repo, read_blob, head, path)
                    if text != (blob or b""):
                        raise ProtocolError(
                            ErrorCode.CONFLICT,
                            f"{name!r} has edits not yet committed (in {path}: typed on "
                            "another node, or waiting for the branch's lease); try again "
                            "once they are",
                        )
        except TimeoutError:
            raise ProtocolError(
                ErrorCode.TIMEOUT, f"{name!r}: the shared store did not answer; try again"
            ) from None

    def _delete(self, repo: str, name: str, head: bytes) -> None:
        delete_branch(self.repos.open(repo), name, head)

    async def commit(self, identity: Identity, repo: str, branch: str) -> dict[str, Any]:
        """Commit the branch's pending live edits now."""
        repo = self.check_read(identity, repo)
        branch = validate_branch(branch)
        self.check_write(identity, repo, branch)
        head = await self.head(repo, branch)
        return {"name": branch, "head": hexsha(await self.git_flush(repo, branch, head))}


def _ref_name(name: str) -> bytes | None:
    """``name`` as the last part of a ref (a branch's or a tag's), if git takes it as one:
    never a path out of the refs (``..``), whatever a caller sends."""
    try:
        return validate_branch(name).encode("utf-8")
    except ProtocolError:
        return None
