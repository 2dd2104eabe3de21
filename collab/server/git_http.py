"""The git bridge: each repository served over git's smart HTTP protocol, same tokens.

``git clone http://USER:TOKEN@HOST:PORT/git/<repo>.git`` (the user name is ignored when a
token is given; in dev mode the password is ignored and the user name is who you are).
Fetches are answered in protocol v2 (git's default) or v0 (``-c protocol.version=0``), as the
client's ``Git-Protocol`` header asks, by ``gitsync.wire.upload_pack``; the answer is sent as it is
made, each piece made in a git thread while the one before is sent, so that a clone's pack is
never held whole.

Reading takes read access to the repository; a push updates a branch its sender may write
(see ``Identity.can_write_branch``), and may rewrite (force) only the sender's own branch and
its forks (``Identity.owns_branch``), and tags if they may write the repository. Each ref of a
push its sender may not update is refused with its own reason and the others are taken, as
git's receive-pack does (with ``--atomic``, none is); a push that may update none of its refs
is refused before its pack is read. Live edits
not committed yet are committed before a push is answered: when git asks for the refs it
pushes to, and again for the branches the push moves before it is taken; and before a fetch is
told the refs, so that a pull then a push is a fast-forward unless someone typed in between. A
push based on a head without them is then refused as git refuses any push behind the branch:
by git itself (``! [rejected] main -> main (fetch first)``), or here if the edits came between
git's two requests (``fetch first: the branch moved on since it was fetched``). A push to a
branch with live documents is merged into them as text edits before the push is answered.

A request body is read to its end as it arrives, under the server's body timeouts and minimum
rate, inflated if it was sent gzip-encoded, and written to a temporary file that stays in memory
while small; the git service (``gitsync.smart_http``) reads that file. A push's commands are
checked against the sender's rights as soon as they are in. Refusals are made in git's protocol,
once the rest of the body has been read and dropped, so that git prints the reason: over
``max_push`` bytes, ``error: remote unpack failed: request over the size limit of N bytes`` (a
fetch: ``fatal: remote error: ...``); a branch its sender may not write,
``! [remote rejected] main -> main (eve may not push to 'main')``; a rewrite of someone else's
branch, ``! [remote rejected] main -> main (non-fast-forward: eve may force-push only
people/eve-... and the branches forked from it ...)``; a deletion of someone else's own
branch, ``! [remote rejected] people/bob-... (people/bob-... is another person's branch: only
its owner may delete it)``. Refusals before the git protocol starts
(a bad token, no access to the repository) are HTTP errors whose text git prints as
``remote: <reason>``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import logging
import tempfile
from collections.abc import AsyncGenerator, Awaitable, Callable
from pathlib import Path
from typing import IO, cast

from aiohttp import web
from dulwich.errors import GitProtocolError

from gitsync import RepoNotFound, Repositories
from gitsync.naming import PARTICIPANT_PREFIX
from gitsync.smart_http import (
    SERVICES,
    SPOOL_IN_MEMORY,
    BodyDecoder,
    BodyTooLarge,
    fetch_pieces,
    info_refs,
    protocol_version,
    push_commands,
    refusal,
    run_service,
)
from protocol.errors import ErrorCode, ProtocolError
from protocol.names import DocId, validate_branch, validate_repo

from ..git.branch_sync import STORE_WAIT, BranchSync, GitSync
from ..git.dropped_work import keep_dropped_work
from ..git.work import in_git_thread, in_repo
from ..live.events import EventHub
from .auth import Authenticator, AuthError, Identity, authorization
from .config import ServerConfig
from .http_api import Route
from .http_body import BodyError, iter_body

__all__ = ["GitBridge"]

log = logging.getLogger("collab.git_http")

HEADS = b"refs/heads/"
_ZERO = b"0" * 40  # the id of no object: a ref created, or deleted
WRITE_BATCH = 1 << 20
"""Body bytes gathered on the event loop before a thread decodes and writes them."""


class GitBridge:
    """The routes under ``/git/``, served from the repositories with the live branches'
    syncers (their edits committed before a push, a push merged into them)."""

    def __init__(
        self,
        config: ServerConfig,
        auth: Authenticator,
        repos: Repositories,
        git: GitSync,
        events: EventHub,
        why_open: Callable[[str, str], Awaitable[str | None]],
        forget_deleted: Callable[[str, str], Awaitable[None]],
    ) -> None:
        self.config = config
        self.auth = auth
        self.repos = repos
        self.git = git
        self.events = events
        self.why_open = why_open
        """Why a branch (repository, name) may not be deleted now: documents of it are open
        (as ``branch.delete`` refuses it); None if it may."""
        self.forget_deleted = forget_deleted
        """Forget what the engine kept of a branch (repository, name) a push deleted."""

    def routes(self) -> list[Route]:
        """``(method, path, handler)`` of each route the bridge serves."""
        return [
            ("GET", "/git/{repo}/info/refs", self.info_refs),
            ("POST", "/git/{repo}/{service}", self.service),
        ]

    def _identity(self, request: web.Request) -> Identity:
        scheme, credentials = authorization(request.headers.get("Authorization", ""))
        user: str | None = request.query.get("user")
        token: str | None = None
        if scheme == "basic":
            try:
                decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
            except ValueError:  # not base64 (binascii.Error), not ASCII, not UTF-8
                raise AuthError(ErrorCode.UNAUTHORIZED, "malformed Basic credentials") from None
            name, _, password = decoded.partition(":")
            user, token = name or None, password or None
        elif scheme == "bearer":
            token = credentials or None
        if self.auth.dev_mode:
            token = None
        return self.auth.authenticate(token=token, user=user, remote=request.remote)

    def _resolve(self, request: web.Request) -> tuple[Identity, str, Path]:
        """Who is asking, for which repository (they may read), and where it is."""
        identity = self._identity(request)
        name = validate_repo(request.match_info["repo"].removesuffix(".git"))
        if not identity.can_read(name):
            raise ProtocolError(ErrorCode.FORBIDDEN, f"no access to repository {name!r}")
        return identity, name, self.repos.path_of(name)

    async def info_refs(self, request: web.Request) -> web.StreamResponse:
        service = request.query.get("service", "")
        protocol = protocol_version(request.headers.get("Git-Protocol"))
        try:
            _, repo, path = self._resolve(request)
            if service not in SERVICES:
                raise ProtocolError(ErrorCode.MALFORMED, "only smart HTTP is served")
            # a fetch gets, and a push is checked against, heads that hold every edit typed
            # so far (a pull then a push is a fast-forward, unless someone types in between)
            await self._commit_live(repo, None, pending_only=service == "git-upload-pack")
            body, content_type = await in_git_thread(self.repos, info_refs, path, service, protocol)
        except (ProtocolError, RepoNotFound) as exc:
            return _refusal(exc)
        return web.Response(body=body, content_type=content_type, headers=_NO_CACHE)

    async def service(self, request: web.Request) -> web.StreamResponse:
        service = request.match_info["service"]
        try:
            identity, repo, path = self._resolve(request)
            if service not in SERVICES:
                raise ProtocolError(ErrorCode.NOT_FOUND, f"no git service {service!r}")
        except (ProtocolError, RepoNotFound) as exc:
            return _refusal(exc)
        encoding = request.headers.get("Content-Encoding")
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as spool:
            body = _Spool(spool, encoding, self.config.max_push)
            commands: list[tuple[bytes, bytes, bytes]] = []
            refused: dict[bytes, str] = {}  # the refs its sender may not update, and why
            if service == "git-receive-pack":
                body.check = functools.partial(self._check_push, identity, repo, commands, refused)
            try:
                await self._read_body(request, body)
            except BodyError as exc:
                if exc.status != 413:
                    return exc.response()
                return await self._over_limit(request, service, spool)
            except BodyTooLarge:
                return await self._over_limit(request, service, spool)
            except (ValueError, web.RequestPayloadError) as exc:  # (bad gzip, say)
                return web.Response(status=400, text=f"malformed git request: {exc}\n")
            except ProtocolError as exc:  # a push its sender may not make
                return await self._forbidden(request, service, spool, exc)
            try:
                await body.check_commands(partial=False)
            except ProtocolError as exc:
                return await self._forbidden(request, service, spool, exc)
            except ValueError as exc:
                return web.Response(status=400, text=f"malformed git request: {exc}\n")
            if service == "git-upload-pack":
                protocol = protocol_version(request.headers.get("Git-Protocol"))
                return await self._fetch(request, path, spool, protocol)
            allowed = [command for command in commands if command[2] not in refused]
            await self._commit_live(repo, _branches(allowed))
            async with contextlib.AsyncExitStack() as held:
                # nobody opens a document of a branch the push deletes from the look for open
                # ones until the engine has forgotten the branch (or the push failed)
                for branch in sorted(set(_branches(_deletions(allowed)))):
                    await held.enter_async_context(self.git.rooms.opens_held(f"{repo}/{branch}:"))
                open_now = await self._open_deleted(repo, allowed)
                try:
                    await self._forget_namesakes(repo, allowed)
                except ProtocolError as exc:
                    return await self._forbidden(request, service, spool, exc)
                try:
                    moved: list[tuple[bytes, bytes, bytes]] = []
                    # in the repositories' executor: closing them waits for a push under way
                    reply, content_type = await in_git_thread(
                        self.repos,
                        run_service,
                        path,
                        service,
                        spool,
                        moved.extend,
                        may_force=functools.partial(_may_force, identity, repo),
                        may_delete=functools.partial(_may_delete, identity, repo, open_now),
                        may_update=refused.get,
                        fsck_accept=self.config.fsck_accept,
                        max_request=self.config.max_push,
                        max_object=self.config.max_object,
                    )
                except (ProtocolError, RepoNotFound) as exc:
                    return _refusal(exc)
                except (ValueError, GitProtocolError) as exc:
                    return web.Response(status=400, text=f"malformed git request: {exc}\n")
                if moved:
                    await self._merge_pushed(repo, moved, identity)
        return web.Response(body=reply, content_type=content_type, headers=_NO_CACHE)

    async def _fetch(
        self, request: web.Request, path: Path, body: IO[bytes], protocol: int
    ) -> web.StreamResponse:
        """Answer a fetch as its pieces are made (a clone's pack is never held whole): each
        piece is made in a git thread while the one before is sent."""
        repos = self.repos
        pieces = await in_git_thread(repos, fetch_pieces, path, body, protocol)
        try:
            piece = await in_git_thread(repos, next, pieces, None)
        except RepoNotFound as exc:
            await in_git_thread(repos, pieces.close)
            return _refusal(exc)
        except (ValueError, GitProtocolError) as exc:
            await in_git_thread(repos, pieces.close)
            return web.Response(status=400, text=f"malformed git request: {exc}\n")
        response = web.StreamResponse(headers=_NO_CACHE)
        response.content_type = "application/x-git-upload-pack-result"
        try:
            await response.prepare(request)
            while piece is not None:
                await response.write(piece)
                piece = await in_git_thread(repos, next, pieces, None)
        finally:
            await in_git_thread(repos, pieces.close)
        await response.write_eof()
        return response

    async def _read_body(self, request: web.Request, body: _Spool) -> None:
        """Read the whole body into ``body``; decoding and writing happen in a thread, a
        batch of about :data:`WRITE_BATCH` bytes at a time. The decoded body is capped at
        ``max_push`` by the spool's decoder, which writes the bytes up to the cap before it
        refuses more, for :meth:`_over_limit` to read the commands from; the bytes as sent are
        capped at twice that (the chunk that crosses that cap is not seen)."""
        config = self.config
        batch: list[bytes] = []
        size = 0
        chunks = cast(  # (an async generator, to be closed if the loop stops early)
            "AsyncGenerator[bytes, None]",
            iter_body(
                request,
                limit=2 * config.max_push,  # (the decoded size is capped exactly by the spool)
                idle_timeout=config.body_timeout,
                min_rate=config.min_body_rate,
            ),
        )
        try:
            async with contextlib.aclosing(chunks):
                async for chunk in chunks:
                    batch.append(chunk)
                    size += len(chunk)
                    if size >= WRITE_BATCH:
                        await asyncio.to_thread(body.write, b"".join(batch))
                        batch, size = [], 0
                        await body.check_commands(partial=True)
        except BodyError as exc:
            if exc.status == 413:
                with contextlib.suppress(BodyTooLarge, ValueError):
                    await asyncio.to_thread(body.write, b"".join(batch))
            raise
        await asyncio.to_thread(body.finish, b"".join(batch))

    async def _refuse(
        self,
        request: web.Request,
        service: str,
        spool: IO[bytes],
        reason: str,
        *,
        status: int,
        pack_refused: bool = True,
        reasons: dict[bytes, str] | None = None,
    ) -> web.StreamResponse:
        """Refuse a request in git's protocol (so that git prints ``reason``), once the rest
        of its body has been read and dropped (up to ``max_push`` bytes more: a client still
        sending when the answer comes would not read it). Answered with HTTP ``status``
        instead if not even the commands of a push came."""
        config = self.config
        try:
            async for _ in iter_body(
                request,
                limit=config.max_push,
                idle_timeout=config.body_timeout,
                min_rate=config.min_body_rate,
            ):
                pass
        except BodyError:
            pass
        spool.seek(0)
        answer = await asyncio.to_thread(
            functools.partial(
                refusal, service, spool, reason, pack_refused=pack_refused, reasons=reasons
            )
        )
        if answer is None:
            return web.Response(status=status, text=f"{reason}\n")
        reply, content_type = answer
        return web.Response(body=reply, content_type=content_type, headers=_NO_CACHE)

    async def _forbidden(
        self, request: web.Request, service: str, spool: IO[bytes], exc: ProtocolError
    ) -> web.StreamResponse:
        """Refuse a push its sender may not make, each ref with its own reason."""
        reasons = exc.reasons if isinstance(exc, PushForbidden) else None
        return await self._refuse(
            request, service, spool, exc.message, status=403, pack_refused=False, reasons=reasons
        )

    async def _over_limit(
        self, request: web.Request, service: str, spool: IO[bytes]
    ) -> web.StreamResponse:
        why = f"request over the size limit of {self.config.max_push} bytes"
        return await self._refuse(request, service, spool, why, status=413)

    async def _commit_live(
        self, repo: str, branches: list[str] | None, *, pending_only: bool = False
    ) -> None:
        """Commit the pending live edits of ``branches`` of ``repo`` (None: every branch), so
        that a fetch gets them, and a push based on a head without them is not a
        fast-forward and is refused as git refuses it: by the client (``fetch first``) if the
        advertisement already showed the new head, else here. ``pending_only``: a branch
        with no edits pending and no commit under way is left alone. The branches commit
        at once, each in its own turn (a repository's many branches cost one commit's time)."""
        syncs = [
            sync
            for sync in self.git.branches.values()
            if sync.repo == repo
            and (branches is None or sync.branch in branches)
            and (not pending_only or sync.dirty or sync.lock.locked())
        ]
        if self.git.leases is not None:
            # in a cluster, edits may be pending on another node: every branch with stored
            # documents is looked at (see BranchSync.flush_everywhere)
            named = {sync.branch for sync in syncs}
            try:
                async with asyncio.timeout(STORE_WAIT):  # (the store waits for Redis longer)
                    stored = await self._stored_branches(repo)
            except Exception as exc:  # Redis away: answered from what this node holds
                log.warning("%s: edits pending on other nodes not looked for: %r", repo, exc)
                stored = set()
            for branch in stored:
                if branch not in named and (branches is None or branch in branches):
                    with contextlib.suppress(LookupError, ValueError):  # gone, damaged
                        syncs.append(await self.git.branch(repo, branch))
        await asyncio.gather(*(_flush_logged(sync) for sync in syncs))

    async def _stored_branches(self, repo: str) -> set[str]:
        """The branches of ``repo`` with documents in the store."""
        found = set()
        for key in await self.git.store.keys(f"{repo}/"):
            with contextlib.suppress(ProtocolError):
                found.add(DocId.parse(key).branch)
        return found

    async def _open_deleted(
        self, repo: str, commands: list[tuple[bytes, bytes, bytes]]
    ) -> dict[str, str]:
        """The branches the push deletes that may not be deleted now, and why."""
        deleted = _branches(_deletions(commands))
        open_now: dict[str, str] = {}
        for branch in deleted:
            why = await self.why_open(repo, branch)
            if why is not None:
                open_now[branch] = why
        return open_now

    async def _forget_namesakes(
        self, repo: str, commands: list[tuple[bytes, bytes, bytes]]
    ) -> None:
        """Before the push makes its new branches, forget the branches another tool deleted
        whose records would be taken for theirs (see ``GitSync.forget_clashing``): a branch
        made again under a deleted one's name must not open with its stored text, nor
        commit it. Raises ``ProtocolError`` (the push is refused) if one cannot be
        forgotten yet."""
        created = _branches([command for command in commands if command[0] == _ZERO])
        for branch in created:
            try:
                validate_branch(branch)
            except ProtocolError:
                continue  # the push refuses it, and says why
            try:
                await self.git.forget_clashing(repo, branch, namesake=True)
            except ProtocolError:
                raise
            except Exception as exc:
                log.exception("%s: forgetting the deleted namesakes of %r failed", repo, branch)
                raise ProtocolError(
                    ErrorCode.INTERNAL,
                    f"a deleted branch whose name clashes with {branch!r} could not be "
                    f"forgotten yet ({exc.__class__.__name__}); try again later",
                ) from None

    def _check_push(
        self,
        identity: Identity,
        repo: str,
        into: list[tuple[bytes, bytes, bytes]],
        refused: dict[bytes, str],
        commands: list[tuple[bytes, bytes, bytes]],
    ) -> None:
        """Find the refs of a push that its sender may not update (see
        :func:`_push_refusal`), and why, into ``refused``: the push refuses those, each with
        its reason, and goes on with the others, as git's receive-pack does. A push that may
        update none of its refs is refused (``PushForbidden``) before its pack is read. The
        commands are kept in ``into``."""
        into.extend(commands)
        for old, _new, ref in commands:
            why = _push_refusal(identity, repo, old, ref)
            if why is not None:
                refused[ref] = why
        if commands and all(ref in refused for _old, _new, ref in commands):
            raise PushForbidden(refused)

    async def _merge_pushed(
        self, repo: str, moved: list[tuple[bytes, bytes, bytes]], identity: Identity
    ) -> None:
        for old, new, ref in moved:
            if not ref.startswith(HEADS):
                continue
            branch = ref[len(HEADS) :].decode("utf-8")
            rescued = None
            if old != _ZERO and new != _ZERO:
                rescued = await self._keep_dropped_work(repo, branch, old, new, identity)
            sync = self.git.branches.get((repo, branch))
            if new == _ZERO:
                try:
                    await self.forget_deleted(repo, branch)
                except Exception:
                    log.exception("%s/%s: forgetting a branch a push deleted failed", repo, branch)
            elif sync is not None:
                try:
                    await sync.catch_up()
                except Exception:
                    log.exception("%s/%s: merging a push into live documents failed", repo, branch)
            self.events.publish(
                repo,
                {
                    "kind": "ref",
                    "branch": branch,
                    "old": None if old == _ZERO else old.decode(),
                    "new": None if new == _ZERO else new.decode(),
                    "cause": "push",
                    "user": identity.user,
                }
                | ({} if rescued is None else {"rescued": rescued}),
            )

    async def _keep_dropped_work(
        self, repo: str, branch: str, old: bytes, new: bytes, identity: Identity
    ) -> str | None:
        """Keep on a branch of its own what a push that rewrote ``branch`` dropped of other
        people's typing (see ``collab.git.dropped_work``); its name, if one was made."""
        try:
            kept = await in_repo(
                self.repos, repo, keep_dropped_work, branch, old, new, identity.user
            )
        except Exception:
            log.exception("%s/%s: keeping the work a force push dropped failed", repo, branch)
            return None
        if kept is not None:
            log.warning(
                "%s/%s: %s's push dropped commits of other people's typing; kept on %s",
                repo,
                branch,
                identity.user,
                kept,
            )
        return kept


_NO_CACHE = {"Cache-Control": "no-cache"}


async def _flush_logged(sync: BranchSync) -> None:
    try:
        await sync.flush_everywhere()
    except Exception:  # (it is tried again later; the git request goes on)
        log.exception("%s: committing live edits for a git request failed", sync.name)


def _branches(commands: list[tuple[bytes, bytes, bytes]]) -> list[str]:
    return [
        ref[len(HEADS) :].decode("utf-8", "replace")
        for _old, _new, ref in commands
        if ref.startswith(HEADS)
    ]


class PushForbidden(ProtocolError):
    """A push may update none of its refs: ``reasons`` says why, for each."""

    def __init__(self, reasons: dict[bytes, str]) -> None:
        super().__init__(ErrorCode.READ_ONLY, next(iter(reasons.values())))
        self.reasons = reasons


def _push_refusal(identity: Identity, repo: str, old: bytes, ref: bytes) -> str | None:
    """Why ``identity`` may not update ``ref`` (from ``old``: zero for a new one), or None:
    a branch takes write access to it (see ``Identity.can_write_branch``), a new one a name
    its sender may make (``Identity.why_not_create``), any other ref write access to the
    repository. A branch name that is not valid is left for the push itself to refuse, with
    its reason, if the sender may write the repository."""
    name = ref.decode("utf-8", "replace")
    try:
        branch = validate_branch(name.removeprefix("refs/heads/"))
    except ProtocolError:
        branch = None
    if not ref.startswith(HEADS) or branch is None:
        return None if identity.can_write(repo) else f"{identity.user} may not push {name}"
    if not identity.can_write_branch(repo, branch):
        return f"{identity.user} may not push to {branch!r}"
    return identity.why_not_create(repo, branch) if old == _ZERO else None


def _deletions(commands: list[tuple[bytes, bytes, bytes]]) -> list[tuple[bytes, bytes, bytes]]:
    return [command for command in commands if command[1] == _ZERO]


def _may_force(identity: Identity, repo: str, ref: bytes) -> str | None:
    """None if ``identity`` may force-push ``ref`` (their own branch or its forks; a ref
    that is no branch, a tag, if they may write the repository: no live work is on it, and
    they may delete it and push it again anyway), else why not, for ``git push`` to
    print."""
    if ref.startswith(HEADS):
        branch = ref[len(HEADS) :].decode("utf-8", "replace")
        if identity.owns_branch(repo, branch):
            return None
        own = identity.own_branch
        return (
            f"{identity.user} may force-push only {own} and the branches forked from it "
            f"({own}-...), not {branch}"
        )
    if identity.can_write(repo):
        return None
    return f"{identity.user} may not push {ref.decode('utf-8', 'replace')}"


def _may_delete(identity: Identity, repo: str, open_now: dict[str, str], ref: bytes) -> str | None:
    """None if ``identity`` may delete ``ref``, else why not: a person's branch (and its
    forks) is deleted only by its owner, or deleting and pushing it again would rewrite it
    in two steps; a branch with open documents (``open_now``) is not deleted under them."""
    if ref.startswith(HEADS):
        branch = ref[len(HEADS) :].decode("utf-8", "replace")
        if branch.startswith(PARTICIPANT_PREFIX) and not identity.owns_branch(repo, branch):
            return f"{branch} is another person's branch: only its owner may delete it"
        if branch in open_now:
            return open_now[branch]
    return None


class _Spool:
    """A request body decoded into a (spooled) temporary file; the file is the caller's.

    aiohttp inflates a body sent with ``Content-Encoding: gzip`` as it reads it (in bounded
    pieces; ``iter_body``'s cap counts the inflated bytes). A body that still starts with
    gzip's magic bytes was left as it came (an ``x-gzip`` body, or a server that does not
    inflate) and is inflated here, capped the same; a git request never starts with them.
    """

    def __init__(self, file: IO[bytes], encoding: str | None, limit: int) -> None:
        self.file = file
        self.encoding = encoding
        self.limit = limit
        self.decoder: BodyDecoder | None = None
        self._head = b""
        self.check: Callable[[list[tuple[bytes, bytes, bytes]]], None] | None = None
        """Called with a push's commands as soon as they are all written (once)."""

    async def check_commands(self, *, partial: bool) -> None:
        """Run :attr:`check` if the commands are in (``partial``: they may not be yet)."""
        if self.check is None:
            return
        position = self.file.tell()
        self.file.seek(0)
        try:
            commands = await asyncio.to_thread(push_commands, self.file, partial=partial)
        finally:
            self.file.seek(position)
        if commands is not None:
            check, self.check = self.check, None
            check(commands)

    def write(self, data: bytes) -> None:
        if self.decoder is None:
            self._head += data
            if len(self._head) < len(_GZIP_MAGIC):
                return
            data, self._head = self._head, b""
            self.decoder = self._decoder(data)
        self._put(data)

    def _put(self, data: bytes) -> None:
        assert self.decoder is not None
        for piece in self.decoder.decode(data):
            self.file.write(piece)

    def _decoder(self, start: bytes) -> BodyDecoder:
        encoding = (self.encoding or "").strip().lower()
        gzipped = start.startswith(_GZIP_MAGIC) and encoding in ("gzip", "x-gzip")
        return BodyDecoder(encoding if gzipped else None, self.limit)

    def finish(self, data: bytes) -> None:
        self.write(data)
        if self.decoder is None:  # (a body of less than two bytes)
            head, self._head = self._head, b""
            self.decoder = self._decoder(head)
            self._put(head)
        self.decoder.finish()
        self.file.seek(0)


_GZIP_MAGIC = b"\x1f\x8b"


def _refusal(exc: ProtocolError | RepoNotFound) -> web.Response:
    if isinstance(exc, RepoNotFound):
        return web.Response(status=404, text="no such repository\n")
    if isinstance(exc, AuthError):
        return web.Response(
            status=401,
            text=f"{exc.message}\n",
            headers={"WWW-Authenticate": 'Basic realm="collab"'},
        )
    status = 403 if exc.code in (ErrorCode.FORBIDDEN, ErrorCode.READ_ONLY) else 400
    if exc.code is ErrorCode.TOO_LARGE:
        status = 413
    return web.Response(status=status, text=f"{exc.code.name}: {exc.message}\n")
