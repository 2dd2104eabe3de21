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
protocol, so that git prints why.

Fetches are served by :mod:`gitsync.wire.upload_pack`, in protocol v2 to clients that ask for it
(the ``Git-Protocol`` header, passed as ``protocol``) and v0 to others; its answer can be
streamed (:func:`fetch_pieces`). Pushes are received by :mod:`gitsync.wire.receive_pack`:
every object is checked as ``git fsck --strict`` would before it enters the repository, every
ref update is checked (private refs, names, fast-forward, the default branch), and refs move by
compare-and-swap from the value the client saw. The server's private refs (``refs/collab/``)
are neither advertised nor writable. A fetch may want any object an advertised ref reaches: a
commit that was a head when it read the advertisement and has since been built on, or a blob a
partial clone left out.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import zlib
from collections.abc import Callable, Generator, Iterator, Mapping
from io import BytesIO
from pathlib import Path
from typing import IO, cast

from dulwich.protocol import pkt_line
from dulwich.repo import Repo

from .packs.stream import PackStats
from .wire.push_wire import MalformedPush, TruncatedPush, read_request, report
from .wire.receive_pack import MAX_OBJECT, ForceCheck, receive_pack, receive_pack_advertisement
from .wire.upload_pack import advertisement, answer, protocol_version

__all__ = [
    "MAX_REQUEST",
    "SERVICES",
    "BodyDecoder",
    "BodyTooLarge",
    "MalformedPush",
    "PackStats",
    "RefUpdate",
    "fetch_pieces",
    "info_refs",
    "over_limit",
    "protocol_version",
    "push_commands",
    "refusal",
    "run_service",
]

SERVICES = ("git-upload-pack", "git-receive-pack")
MAX_REQUEST = 1 << 30
EXPANSION = 32
"""How many times its size a push's objects may expand to in all (real histories expand
5 to 20 times; the bound is on the work of expanding them: memory is bounded by the largest
object)."""
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


def _open(repo_path: Path) -> Repo:
    repo = Repo(str(repo_path))
    repo.object_store.fsync_object_files = True
    return repo


def info_refs(repo_path: Path, service: str, protocol: int = 0) -> tuple[bytes, str]:
    """The ref advertisement for ``GET info/refs?service=...``: (body, content type);
    ``protocol`` is the version the client asked for (2, or 0; see
    :func:`~gitsync.wire.upload_pack.protocol_version`). A push is always spoken in v0."""
    _check_service(service)
    content_type = f"application/x-{service}-advertisement"
    if service == "git-upload-pack" and protocol == 2:
        return advertisement(repo_path, 2), content_type
    out = BytesIO()
    out.write(pkt_line(b"# service=" + service.encode("ascii") + b"\n") + pkt_line(None))
    if service == "git-receive-pack":
        repo = _open(repo_path)
        try:
            out.write(receive_pack_advertisement(repo))
        finally:
            repo.close()
    else:
        out.write(advertisement(repo_path, 0))
    return out.getvalue(), content_type


def run_service(
    repo_path: Path,
    service: str,
    body: bytes | IO[bytes],
    on_ref_update: Callable[[list[RefUpdate]], None] | None = None,
    *,
    content_encoding: str | None = None,
    allow_non_fast_forward: bool = False,
    may_force: ForceCheck | None = None,
    may_delete: ForceCheck | None = None,
    may_update: ForceCheck | None = None,
    fsck_accept: frozenset[str] = frozenset(),
    max_request: int = MAX_REQUEST,
    max_object: int = MAX_OBJECT,
    protocol: int = 0,
) -> tuple[bytes, str]:
    """Answer ``POST <service>`` with request ``body``: (response body, content type).

    ``body`` is the request as bytes or as a binary file read from where it stands;
    ``content_encoding`` is the request's ``Content-Encoding`` header (``gzip`` or none);
    ``protocol`` the version a fetch asked for. A push may force a ref if
    ``allow_non_fast_forward`` (any) or ``may_force`` allows it, and delete one unless
    ``may_delete`` says why not; it updates no ref ``may_update`` says why not for (that
    command refused, the others going on); ``fsck_accept`` names the identity-line problems a pushed
    object may have (see ``receive_pack``). After a push, ``on_ref_update`` is called with
    the refs that moved, once they have moved and before the response is returned; its
    exceptions propagate. A push refused in part or whole is answered with the reasons, as
    git's report-status, a refused fetch with ``ERR``. A malformed body raises
    ``ValueError`` (:class:`BodyTooLarge` over ``max_request``, :class:`MalformedPush`).
    A pushed pack with an object over ``max_object`` bytes, expanded, or objects over
    :data:`EXPANSION` times ``max_request`` in all, is refused before it is expanded.
    """
    _check_service(service)
    with _decoded(body, content_encoding, max_request) as data:
        if service == "git-upload-pack":
            return b"".join(answer(repo_path, data.read(), protocol)), _result(service)
        repo = _open(repo_path)
        try:
            received = receive_pack(
                repo,
                data,
                allow_non_fast_forward=allow_non_fast_forward,
                may_force=may_force,
                may_delete=may_delete,
                may_update=may_update,
                fsck_accept=fsck_accept,
                max_object=max_object,
                max_expanded=EXPANSION * max_request,
            )
        finally:
            repo.close()
    out, updated = received.response, received.moved
    if updated and on_ref_update is not None:
        on_ref_update(updated)
    return out, _result(service)


def _result(service: str) -> str:
    return f"application/x-{service}-result"


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
    service: str,
    head: IO[bytes],
    reason: str,
    *,
    pack_refused: bool = True,
    reasons: Mapping[bytes, str] | None = None,
) -> tuple[bytes, str] | None:
    """The answer that refuses a whole request, given the part of its body that came
    (decoded, from where ``head`` stands), in git's protocol so that git prints ``reason``:
    a fetch gets an ``ERR`` line (``fatal: remote error: <reason>``); each command of a push
    is refused (``! [remote rejected] <ref> (<reason>)``), and so is its pack if
    ``pack_refused`` (``error: remote unpack failed: <reason>``); a command whose ref has a
    reason of its own in ``reasons`` is refused with that one. None if not even the commands
    of a push came whole."""
    _check_service(service)
    if service == "git-upload-pack":
        return pkt_line(f"ERR {reason}\n".encode()), f"application/x-{service}-result"
    try:
        request = read_request(head.read)
    except MalformedPush:
        return None
    if request is None:
        return None
    why = reasons or {}
    body = report(
        request,
        reason if pack_refused else None,
        [why.get(command.ref, reason) for command in request.commands],
    )
    return body, f"application/x-{service}-result"


def over_limit(service: str, head: IO[bytes], limit: int) -> tuple[bytes, str] | None:
    """:func:`refusal` of a request whose body went over ``limit`` bytes."""
    return refusal(service, head, f"request over the size limit of {limit} bytes")


def fetch_pieces(
    repo_path: Path, body: IO[bytes], protocol: int = 0, stats: PackStats | None = None
) -> Generator[bytes, None, None]:
    """The answer to ``POST git-upload-pack`` with the decoded request ``body`` (read from
    where it stands), in pieces to be sent as they come (see
    :func:`gitsync.wire.upload_pack.answer`)."""
    return answer(repo_path, body.read(), protocol, stats)


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
