"""The ``Authenticator`` seam: HMAC-signed tokens, and a loopback-only dev mode."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from gitsync.naming import PARTICIPANT_PREFIX, participant_branch, participant_of
from protocol.errors import ErrorCode, ProtocolError

__all__ = [
    "DEV_MODE",
    "TOKEN_REQUIRED",
    "AuthError",
    "Authenticator",
    "DevAuthenticator",
    "Identity",
    "Role",
    "TokenAuthenticator",
    "authorization",
    "bearer_token",
    "dev_mode_refusal",
    "end_at_expiry",
    "is_loopback",
    "validate_user",
]

_TOKEN_VERSION = "v1"
_USER_RE = re.compile(r"[^\x00-\x1f\x7f]{1,100}")
ANY_REPO = "*"


class Role(StrEnum):
    READ = "read"
    WRITE = "write"
    WORKER = "worker"  # a completion worker: connects to /worker, opens no document
    METRICS = "metrics"  # a monitoring system: reads GET /metrics, opens no document


class AuthError(ProtocolError):
    """Credentials were refused; ``code`` is UNAUTHORIZED or FORBIDDEN."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is on a connection, and what they may do. ``repo`` is ``"*"`` for every repo."""

    user: str
    role: Role
    repo: str
    expires: float | None = field(default=None, compare=False)
    """When the credentials end (Unix time); ``None``: never."""

    def can_read(self, repo: str) -> bool:
        return self.role in (Role.READ, Role.WRITE) and self.repo in (ANY_REPO, repo)

    def can_write(self, repo: str) -> bool:
        return self.role is Role.WRITE and self.can_read(repo)

    @property
    def own_branch(self) -> str:
        """This participant's own branch (see ``gitsync.naming``)."""
        return participant_branch(self.user)

    def can_write_branch(self, repo: str, branch: str) -> bool:
        """Anyone who may read a repository may write their own branch there, and the
        branches named ``<own branch>-...`` (their forks); writing any other branch (hopping
        in, merging into it) takes the ``write`` role."""
        if self.owns_branch(repo, branch):
            return True
        return self.can_write(repo)

    def branch_writability(self, repo: str) -> Callable[[str], bool]:
        """``can_write_branch(repo, branch)`` as a function of ``branch``, with what depends
        only on this identity and ``repo`` worked out once (for a list of thousands)."""
        if self.can_write(repo):
            return lambda _branch: True
        if not self.can_read(repo):
            return lambda _branch: False
        own = self.own_branch
        forks = own + "-"  # (participant_of is the longer look: only for names that start so)
        return lambda branch: (
            branch == own or (branch.startswith(forks) and participant_of(branch) == own)
        )

    def owns_branch(self, repo: str, branch: str) -> bool:
        """Whether ``branch`` is this participant's own branch or one of its forks (named
        ``<own branch>-...``, but not another participant's own branch or one of its forks:
        user ``ann-1a2b3c4d-x``'s branch begins as ``ann``'s forks do, see
        ``participant_of``) in a repository they may read. Only these may be rewritten by a
        force push: nobody else's work is on them."""
        return participant_of(branch) == self.own_branch and self.can_read(repo)

    def why_not_create(self, repo: str, branch: str) -> str | None:
        """Why this participant may not create ``branch``, if they may not: the names under
        ``people/`` are each person's own branch and its forks, made by that person only
        (else anyone could lay a branch in another's place before they join)."""
        if not branch.startswith(PARTICIPANT_PREFIX) or self.owns_branch(repo, branch):
            return None
        own = self.own_branch
        if branch.startswith(own + "-"):  # theirs by its start, another's by its shape
            return (
                f"{branch!r} is or begins as the shape of a person's own branch (a dash and "
                f"8 hex digits end it or a part of it before a dash): name the fork otherwise "
                f"({own}-fork-2, say)"
            )
        return (
            f"{branch!r} is under {PARTICIPANT_PREFIX}, where each person has their own branch "
            f"and its forks: {self.user} may create only {own} and {own}-..."
        )


TOKEN_EXPIRED = "token expired: ask for a new one (`collab token` mints them)"


def end_at_expiry(
    identity: Identity, abort: Callable[[ErrorCode, str], None]
) -> asyncio.TimerHandle | None:
    """Call ``abort(UNAUTHORIZED, ...)`` when ``identity``'s token expires: a connection
    lasts no longer than the credentials it was opened with (its client reconnects with new
    ones). The caller cancels the timer when the connection ends first."""
    if identity.expires is None:
        return None
    delay = max(0.0, identity.expires - time.time())
    return asyncio.get_running_loop().call_later(
        delay, abort, ErrorCode.UNAUTHORIZED, TOKEN_EXPIRED
    )


class Authenticator(Protocol):
    """Credentials in, identity out; raises ``AuthError`` when refused."""

    @property
    def dev_mode(self) -> bool: ...

    def authenticate(
        self, *, token: str | None, user: str | None, remote: str | None
    ) -> Identity: ...


def validate_user(user: str) -> str:
    if not _USER_RE.fullmatch(user) or user.strip() != user:
        raise AuthError(ErrorCode.UNAUTHORIZED, f"invalid user name {user[:100]!r}")
    return user


def authorization(header: str) -> tuple[str, str]:
    """An ``Authorization`` header's scheme, in lower case (a scheme is case-insensitive,
    RFC 7235: ``Bearer``, ``bearer`` and ``BEARER`` are one), and its credentials, stripped;
    ``("", "")`` for an empty header."""
    scheme, _, credentials = header.strip().partition(" ")
    return scheme.lower(), credentials.strip()


def bearer_token(header: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (any case of ``Bearer``);
    None for another scheme, or none."""
    scheme, credentials = authorization(header)
    return credentials if scheme == "bearer" and credentials else None


def is_loopback(remote: str | None) -> bool:
    if remote is None:
        return False
    try:
        address = ipaddress.ip_address(remote.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # 127.0.0.1 as a dual-stack socket sees it
    return address.is_loopback


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenAuthenticator:
    """Checks ``v1.<payload>.<signature>`` tokens signed with HMAC-SHA256 and the server secret."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the server secret must be at least 16 bytes")
        self._secret = secret

    @property
    def dev_mode(self) -> bool:
        return False

    def _sign(self, payload: str) -> str:
        mac = hmac.new(self._secret, f"{_TOKEN_VERSION}.{payload}".encode(), hashlib.sha256)
        return _b64encode(mac.digest())

    def mint(self, *, user: str, repo: str, role: Role, ttl: float | None = 3600.0) -> str:
        """Return a token for ``user`` on ``repo`` (``"*"`` for all) valid for ``ttl`` seconds."""
        validate_user(user)
        body: dict[str, object] = {"u": user, "r": repo, "role": str(role), "iat": int(time.time())}
        if ttl is not None:
            body["exp"] = time.time() + ttl
        payload = _b64encode(json.dumps(body, separators=(",", ":")).encode())
        return f"{_TOKEN_VERSION}.{payload}.{self._sign(payload)}"

    def authenticate(self, *, token: str | None, user: str | None, remote: str | None) -> Identity:
        if not token:
            raise AuthError(ErrorCode.UNAUTHORIZED, TOKEN_REQUIRED)
        version, _, rest = token.partition(".")
        payload, _, signature = rest.partition(".")
        if version != _TOKEN_VERSION or not payload or not signature or not token.isascii():
            raise AuthError(
                ErrorCode.UNAUTHORIZED,
                "malformed token: pass it whole, as `collab token` printed it",
            )
        if not hmac.compare_digest(self._sign(payload), signature):
            raise AuthError(
                ErrorCode.UNAUTHORIZED,
                "bad token signature: minted with another secret, or altered; ask for a new "
                "one (`collab token`, with this server's COLLAB_SECRET)",
            )
        try:
            body = json.loads(_b64decode(payload))
            name, repo, role = str(body["u"]), str(body["r"]), Role(body["role"])
            expires = body.get("exp")
        except (ValueError, KeyError, TypeError) as exc:
            raise AuthError(ErrorCode.UNAUTHORIZED, "malformed token payload") from exc
        if expires is not None and float(expires) < time.time():
            raise AuthError(ErrorCode.UNAUTHORIZED, TOKEN_EXPIRED)
        return Identity(validate_user(name), role, repo, float(expires) if expires else None)


class DevAuthenticator:
    """No secret: anyone on loopback may name themselves with ``?user=``. Never on a network."""

    @property
    def dev_mode(self) -> bool:
        return True

    def authenticate(self, *, token: str | None, user: str | None, remote: str | None) -> Identity:
        if not is_loopback(remote):
            raise AuthError(ErrorCode.UNAUTHORIZED, "dev mode accepts loopback connections only")
        if not user:
            raise dev_mode_refusal("?user=NAME", token=bool(token))
        return Identity(validate_user(user), Role.WRITE, ANY_REPO)


DEV_MODE = "this server runs in dev mode (no secret)"
TOKEN_REQUIRED = "a token is required (`collab token` mints them)"
TOKEN_EXPIRED = "token expired: ask for a new one (`collab token` mints them)"
"""How every refusal of a dev-mode server for a missing user name begins."""


def dev_mode_refusal(option: str, *, token: bool) -> AuthError:
    """The refusal of a dev-mode server to a caller who gave no user name, naming the
    ``option`` that caller has for it (``?user=NAME`` in a URL, say)."""
    takes = " and takes no token" if token else ""
    return AuthError(ErrorCode.UNAUTHORIZED, f"{DEV_MODE}{takes}: name yourself with {option}")
