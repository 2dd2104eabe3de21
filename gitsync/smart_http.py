"""The git smart HTTP protocol (v0/v1, stateless RPC) for ``git clone``, ``fetch`` and ``push``.

Synchronous functions for an HTTP handler to run in a thread; routing, authentication and
streaming stay with the caller:

- ``GET  <repo>/info/refs?service=<service>`` -> :func:`info_refs`
- ``POST <repo>/<service>``                   -> :func:`run_service`

``service`` is ``git-upload-pack`` (fetch, clone) or ``git-receive-pack`` (push). A request
body is bytes or a binary file (which a caller streams a large push into); one sent with
``Content-Encoding: gzip`` is decoded by :class:`BodyDecoder`, piece by piece and capped, by
:func:`run_service` or by a caller that decodes as the body arrives. A request refused as a
whole (over the cap, or not the sender's to make) is answered by :func:`refusal`, in the
protocol, so that git prints why. Clients asking for protocol v2 get a v0 advertisement, which
every git client accepts.

Fetches are served by dulwich's upload-pack. Pushes are received by :mod:`gitsync.receive_pack`:
every object is checked as ``git fsck --strict`` would before it enters the repository, every
ref update is checked (private refs, names, fast-forward, the default branch), and refs move by
compare-and-swap from the value the client saw. The server's private refs (``refs/collab/``)
are neither advertised nor writable. A fetch may want a commit that was a head when it read the
advertisement and has since been built on; it is served if a head still reaches it.
"""

from __future__ import annotations

import collections
import contextlib
import os
import tempfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from io import BytesIO
from pathlib import Path
from typing import IO, cast

from dulwich.errors import GitProtocolError
from dulwich.objects import Commit, ObjectID, Tag
from dulwich.protocol import Protocol, ReceivableProtocol, pkt_line
from dulwich.refs import Ref
from dulwich.repo import Repo
from dulwich.server import Backend, BackendRepo, DictBackend, UploadPackHandler

from .push_wire import MalformedPush, TruncatedPush, read_request, report
from .receive_pack import PRIVATE, receive_pack, receive_pack_advertisement

__all__ = [
    "MAX_REQUEST",
    "SERVICES",
    "BodyDecoder",
    "BodyTooLarge",
    "MalformedPush",
    "RefUpdate",
    "info_refs",
    "over_limit",
    "push_commands",
    "refusal",
    "run_service",
]

SERVICES = ("git-upload-pack", "git-receive-pack")
MAX_REQUEST = 1 << 30
"""Largest request body accepted, after decompression (bytes)."""
SPOOL_IN_MEMORY = 4 << 20
"""A decoded request body is kept in memory up to this size, then in a temporary file."""
_PIECE = 1 << 20
"""Most bytes inflated at once: a small gzip body can inflate to a great deal."""

RefUpdate = tuple[bytes, bytes, bytes]
"""``(old, new, ref)``; an all-zero id means the ref did not exist, or was deleted."""


def _check_service(service: str) -> None:
    if service not in SERVICES:
        raise ValueError(f"unknown git service {service!r}; expected one of {', '.join(SERVICES)}")


class _ServedRepo(Repo):
    """A repository as clients see it: without the server's private refs.

    ``reachable_wants`` are commits a fetch asks for that were branch heads when the client
    read the advertisement and have since been built on (a continuous commit lands between
    the two requests of a stateless fetch). They are listed as extra refs, so that dulwich,
    which accepts only current heads, serves them; git's upload-pack accepts any commit
    reachable from a head in stateless mode, and only those are listed.
    """

    reachable_wants: Sequence[ObjectID] = ()

    def get_refs(self) -> dict[Ref, ObjectID]:
        refs = super().get_refs()
        served = {name: sha for name, sha in refs.items() if not name.startswith(PRIVATE)}
        for sha in self.reachable_wants:
            served[Ref(_WANTED + sha)] = sha
        return served


def _open(repo_path: Path) -> _ServedRepo:
    repo = _ServedRepo(str(repo_path))
    repo.object_store.fsync_object_files = True
    return repo


def info_refs(repo_path: Path, service: str) -> tuple[bytes, str]:
    """The ref advertisement for ``GET info/refs?service=...``: (body, content type)."""
    _check_service(service)
    out = BytesIO()
    out.write(pkt_line(b"# service=" + service.encode("ascii") + b"\n") + pkt_line(None))
    repo = _open(repo_path)
    try:
        if service == "git-receive-pack":
            out.write(receive_pack_advertisement(repo))
        else:
            proto = ReceivableProtocol(BytesIO().read, out.write)
            UploadPackHandler(_backend(repo), ["/"], proto, True, advertise_refs=True).handle()
    finally:
        repo.close()
    return out.getvalue(), f"application/x-{service}-advertisement"


def run_service(
    repo_path: Path,
    service: str,
    body: bytes | IO[bytes],
    on_ref_update: Callable[[list[RefUpdate]], None] | None = None,
    *,
    content_encoding: str | None = None,
    allow_non_fast_forward: bool = False,
    max_request: int = MAX_REQUEST,
) -> tuple[bytes, str]:
    """Answer ``POST <service>`` with request ``body``: (response body, content type).

    ``body`` is the request as bytes or as a binary file read from where it stands;
    ``content_encoding`` is the request's ``Content-Encoding`` header (``gzip`` or none).
    After a push, ``on_ref_update`` is called with the refs that moved, once they have moved
    and before the response is returned; its exceptions propagate. A push refused in part or
    whole is answered with the reasons, as git's report-status. A malformed request raises
    ``ValueError`` (body; :class:`BodyTooLarge` over ``max_request``, :class:`MalformedPush`)
    or ``dulwich.errors.GitProtocolError`` (fetch).
    """
    _check_service(service)
    with _decoded(body, content_encoding, max_request) as data:
        repo = _open(repo_path)
        try:
            if service == "git-receive-pack":
                received = receive_pack(repo, data, allow_non_fast_forward=allow_non_fast_forward)
                out, updated = received.response, received.moved
            else:
                start = data.tell()
                repo.reachable_wants = _reachable_wants(repo, _wants(data))
                data.seek(start)
                sink = BytesIO()
                proto = ReceivableProtocol(data.read, sink.write)
                UploadPackHandler(_backend(repo), ["/"], proto, stateless_rpc=True).handle()
                out, updated = sink.getvalue(), []
        finally:
            repo.close()
    if updated and on_ref_update is not None:
        on_ref_update(updated)
    return out, f"application/x-{service}-result"


def push_commands(body: IO[bytes], *, partial: bool = False) -> list[RefUpdate] | None:
    """The ``(old, new, ref)`` commands of a decoded push request, read from where ``body``
    stands, which is left where it was; :class:`MalformedPush` if they do not parse. With
    ``partial``, ``body`` may hold only the start of the request: None if the commands are
    not all there yet."""
    start = body.tell()
    try:
        request = read_request(body.read)
    except TruncatedPush:
        if partial:
            return None
        raise
    finally:
        body.seek(start)
    if request is None:
        return []
    return [(command.old, command.new, command.ref) for command in request.commands]


def refusal(
    service: str, head: IO[bytes], reason: str, *, pack_refused: bool = True
) -> tuple[bytes, str] | None:
    """The answer that refuses a whole request, given the part of its body that came
    (decoded, from where ``head`` stands), in git's protocol so that git prints ``reason``:
    a fetch gets an ``ERR`` line (``fatal: remote error: <reason>``); each command of a push
    is refused (``! [remote rejected] <ref> (<reason>)``), and so is its pack if
    ``pack_refused`` (``error: remote unpack failed: <reason>``). None if not even the
    commands of a push came whole."""
    _check_service(service)
    if service == "git-upload-pack":
        return pkt_line(f"ERR {reason}\n".encode()), f"application/x-{service}-result"
    try:
        request = read_request(head.read)
    except MalformedPush:
        return None
    if request is None:
        return None
    body = report(request, reason if pack_refused else None, [reason] * len(request.commands))
    return body, f"application/x-{service}-result"


def over_limit(service: str, head: IO[bytes], limit: int) -> tuple[bytes, str] | None:
    """:func:`refusal` of a request whose body went over ``limit`` bytes."""
    return refusal(service, head, f"request over the size limit of {limit} bytes")


_WANTED = b"refs/collab-wanted/"


def _wants(data: IO[bytes]) -> list[ObjectID]:
    """The ids of the ``want`` lines at the start of an upload-pack request (malformed
    lines end the list; the request itself is refused by the handler)."""
    wants: list[ObjectID] = []
    proto = Protocol(data.read, lambda _data: None)
    try:
        for line in proto.read_pkt_seq():
            if not line.startswith(b"want "):
                break
            sha = line[5:45]
            if len(sha) == 40 and all(c in b"0123456789abcdef" for c in sha):
                wants.append(ObjectID(sha))
    except GitProtocolError:
        pass
    return wants


MAX_OLD_WANTS = 64
"""Wants that are not heads any more, looked for per request; more are refused."""
MAX_WALK = 2000
"""Commits walked back from the heads, all together, to find those wants."""


def _reachable_wants(repo: _ServedRepo, wants: Sequence[ObjectID]) -> list[ObjectID]:
    """Those of ``wants`` that are not heads but commits reachable from one, within
    :data:`MAX_WALK` commits of the heads: a fetch racing a commit wants a head's recent
    ancestor, and a bounded walk keeps a request from costing a walk of all history."""
    heads = set(repo.get_refs().values())
    todo = {want for want in dict.fromkeys(wants) if want not in heads}
    todo = set(list(todo)[:MAX_OLD_WANTS])
    found: list[ObjectID] = []
    queue = collections.deque(heads)
    seen: set[ObjectID] = set()
    while queue and todo and len(seen) < MAX_WALK:
        sha = queue.popleft()
        if sha in seen:
            continue
        seen.add(sha)
        try:
            obj = repo.object_store[sha]
        except KeyError:
            continue
        if isinstance(obj, Tag):
            queue.append(obj.object[1])
        elif isinstance(obj, Commit):
            if sha in todo:
                todo.discard(sha)
                found.append(sha)
            queue.extend(obj.parents)
    return found


class BodyTooLarge(ValueError):
    """A request body over its size limit, after decompression."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body over {limit} bytes")
        self.limit = limit


class BodyDecoder:
    """A request body decoded as it arrives: :meth:`decode` each piece, then :meth:`finish`.

    Identity and gzip (``x-gzip``; several members, as gzip allows) are understood. More than
    ``limit`` decoded bytes raise :class:`BodyTooLarge`, however small the compressed body,
    once the first ``limit`` bytes have been yielded (the start of a request says what it
    was). A body that is not valid gzip, or ends inside a gzip member, raises ``ValueError``.
    """

    def __init__(self, content_encoding: str | None, limit: int) -> None:
        encoding = (content_encoding or "identity").strip().lower()
        if encoding not in ("identity", "gzip", "x-gzip"):
            raise ValueError(f"unsupported Content-Encoding {content_encoding!r}")
        self.limit = limit
        self.total = 0
        self.encoded = encoding != "identity"
        self._inflater = _gunzip()
        self._inside = False
        """Whether a gzip member has begun and not ended."""
        self._over = False

    def decode(self, data: bytes) -> Iterator[bytes]:
        """The decoded bytes of the next piece of the body, in pieces of at most 1 MiB."""
        if not self.encoded:
            yield self._count(data)
            self._check()
            return
        while data or self._inside:
            inflater = self._inflater
            try:
                piece = inflater.decompress(data, _PIECE)
            except zlib.error as exc:
                raise ValueError(f"request body is not valid gzip: {exc}") from None
            data = inflater.unconsumed_tail
            self._inside = not inflater.eof
            if inflater.eof:
                data = inflater.unused_data + data
                self._inflater = _gunzip()
            yield self._count(piece)
            self._check()
            if not data and len(piece) < _PIECE:
                break  # (a full piece may leave output inside zlib: ask again)

    def _check(self) -> None:
        if self._over:
            raise BodyTooLarge(self.limit)

    def finish(self) -> None:
        """Check that the body did not end inside a gzip member."""
        if self._inside:
            raise ValueError("request body is not valid gzip: it ends inside the stream")

    def _count(self, piece: bytes) -> bytes:
        room = self.limit - self.total
        self.total += len(piece)
        if self.total > self.limit:
            self._over = True
            return piece[: max(room, 0)]
        return piece


def _gunzip() -> zlib._Decompress:
    return zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)


def _decoded(
    body: bytes | IO[bytes], content_encoding: str | None, limit: int
) -> contextlib.AbstractContextManager[IO[bytes]]:
    """``body`` as a binary file of its decoded bytes: a file given without an encoding as
    it is (and left open), else a temporary file that is closed after use."""
    decoder = BodyDecoder(content_encoding, limit)
    if not isinstance(body, bytes) and not decoder.encoded:
        start = body.tell()
        if body.seek(0, os.SEEK_END) - start > limit:
            raise BodyTooLarge(limit)
        body.seek(start)
        return contextlib.nullcontext(body)
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115 (returned)
    try:
        if isinstance(body, bytes):
            pieces: Iterator[bytes] = iter([body])
        else:
            pieces = iter(lambda: body.read(_PIECE), b"")
        for piece in pieces:
            for decoded in decoder.decode(piece):
                spool.write(decoded)
        decoder.finish()
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    return cast("contextlib.AbstractContextManager[IO[bytes]]", spool)


def _backend(repo: Repo) -> Backend:
    repos: dict[str, BackendRepo] = {"/": repo}
    return DictBackend(repos)
