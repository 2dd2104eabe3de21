"""The git bridge: each repository served over git's smart HTTP protocol, same tokens.

``git clone http://USER:TOKEN@HOST:PORT/git/<repo>.git`` (the user name is ignored when a
token is given; in dev mode the password is ignored and the user name is who you are).
Reading takes read access to the repository; a push needs write access to every branch it
moves (see ``Identity.can_write_branch``). A push to a branch with live documents is merged
into them as text edits before the push is answered.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import zlib
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web
from dulwich.errors import GitProtocolError
from dulwich.protocol import Protocol

from gitsync import RepoNotFound
from gitsync.smart_http import SERVICES, info_refs, run_service
from protocol.errors import ErrorCode, ProtocolError
from protocol.names import validate_branch, validate_repo

from .auth import AuthError, Identity

if TYPE_CHECKING:
    from .server import CollabServer

__all__ = ["GitBridge"]

log = logging.getLogger("collab.git_http")

MAX_PUSH = 512 * 1024 * 1024
HEADS = b"refs/heads/"


class GitBridge:
    def __init__(self, server: CollabServer) -> None:
        self.server = server
        server.add_route("GET", "/git/{repo}/info/refs", self.info_refs)
        server.add_route("POST", "/git/{repo}/{service}", self.service)

    def _identity(self, request: web.Request) -> Identity:
        header = request.headers.get("Authorization", "")
        user: str | None = request.query.get("user")
        token: str | None = None
        if header.startswith("Basic "):
            try:
                decoded = base64.b64decode(header[6:], validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                raise AuthError(ErrorCode.UNAUTHORIZED, "malformed Basic credentials") from None
            name, _, password = decoded.partition(":")
            user, token = name or None, password or None
        elif header.startswith("Bearer "):
            token = header[7:].strip()
        if self.server.auth.dev_mode:
            token = None
        return self.server.auth.authenticate(token=token, user=user, remote=request.remote)

    def _resolve(self, request: web.Request) -> tuple[Identity, str, Path]:
        """Who is asking, for which repository (they may read), and where it is."""
        identity = self._identity(request)
        name = validate_repo(request.match_info["repo"].removesuffix(".git"))
        if not identity.can_read(name):
            raise ProtocolError(ErrorCode.FORBIDDEN, f"no access to repository {name!r}")
        return identity, name, self.server.repos.path_of(name)

    async def info_refs(self, request: web.Request) -> web.StreamResponse:
        service = request.query.get("service", "")
        try:
            _, _, path = self._resolve(request)
            if service not in SERVICES:
                raise ProtocolError(ErrorCode.MALFORMED, "only smart HTTP is served")
            body, content_type = await asyncio.to_thread(info_refs, path, service)
        except (ProtocolError, RepoNotFound) as exc:
            return _refusal(exc)
        return web.Response(body=body, content_type=content_type, headers=_NO_CACHE)

    async def service(self, request: web.Request) -> web.StreamResponse:
        service = request.match_info["service"]
        try:
            identity, repo, path = self._resolve(request)
            if service not in SERVICES:
                raise ProtocolError(ErrorCode.NOT_FOUND, f"no git service {service!r}")
            body = await request.content.read(MAX_PUSH + 1)
            if len(body) > MAX_PUSH:
                raise ProtocolError(ErrorCode.TOO_LARGE, "push over the size limit")
            encoding = request.headers.get("Content-Encoding")
            if service == "git-receive-pack":
                self._check_push(identity, repo, _push_commands(body, encoding))
            moved: list[tuple[bytes, bytes, bytes]] = []
            reply, content_type = await asyncio.to_thread(
                run_service, path, service, body, moved.extend, content_encoding=encoding
            )
        except (ProtocolError, RepoNotFound) as exc:
            return _refusal(exc)
        except (ValueError, GitProtocolError) as exc:
            return web.Response(status=400, text=f"malformed git request: {exc}\n")
        if moved:
            await self._merge_pushed(repo, moved, identity)
        return web.Response(body=reply, content_type=content_type, headers=_NO_CACHE)

    def _check_push(
        self, identity: Identity, repo: str, commands: list[tuple[bytes, bytes, bytes]]
    ) -> None:
        for _old, _new, ref in commands:
            if not ref.startswith(HEADS):
                if not identity.can_write(repo):
                    raise ProtocolError(ErrorCode.READ_ONLY, f"may not push {ref!r}")
                continue
            branch = validate_branch(ref[len(HEADS) :].decode("utf-8", "replace"))
            if not identity.can_write_branch(repo, branch):
                raise ProtocolError(
                    ErrorCode.READ_ONLY, f"{identity.user} may not push to {branch!r}"
                )

    async def _merge_pushed(
        self, repo: str, moved: list[tuple[bytes, bytes, bytes]], identity: Identity
    ) -> None:
        for old, new, ref in moved:
            if not ref.startswith(HEADS):
                continue
            branch = ref[len(HEADS) :].decode("utf-8")
            sync = self.server.git.branches.get((repo, branch))
            if sync is not None:
                try:
                    await sync.catch_up()
                except Exception:
                    log.exception("%s/%s: merging a push into live documents failed", repo, branch)
            zero = b"0" * 40
            self.server.events.publish(
                repo,
                {
                    "kind": "ref",
                    "branch": branch,
                    "old": None if old == zero else old.decode(),
                    "new": None if new == zero else new.decode(),
                    "cause": "push",
                    "user": identity.user,
                },
            )


_NO_CACHE = {"Cache-Control": "no-cache"}


def _push_commands(body: bytes, encoding: str | None) -> list[tuple[bytes, bytes, bytes]]:
    """The ``old new ref`` commands at the start of a receive-pack request."""
    if encoding == "gzip":
        body = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(body, 1 << 20)
    proto = Protocol(BytesIO(body).read, lambda _data: None)
    commands = []
    try:
        for line in proto.read_pkt_seq():
            head = line.split(b"\0", 1)[0].rstrip(b"\n")
            parts = head.split(b" ")
            if len(parts) != 3:
                raise ProtocolError(ErrorCode.MALFORMED, "malformed push command")
            commands.append((parts[0], parts[1], parts[2]))
    except GitProtocolError as exc:
        raise ProtocolError(ErrorCode.MALFORMED, f"malformed push: {exc}") from None
    return commands


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
