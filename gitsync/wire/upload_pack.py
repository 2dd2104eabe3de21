"""Fetches and clones (upload-pack), protocol v0/v1 and v2, answered from the repository's
packs: :func:`advertisement` for ``GET info/refs``, :func:`answer` for ``POST git-upload-pack``.

A fetch is answered as git's ``upload-pack`` answers it over stateless HTTP:

- wants must be reachable from an advertised ref (:mod:`gitsync.wire.reachable`); a ref's current
  value is always fine, an older commit of a branch (a fetch racing a continuous commit) or
  any tree or blob (a partial clone's lazy fetch) is fine while a ref still reaches it;
- haves are acknowledged as git does (v0: ``multi_ack_detailed``, ``multi_ack`` or single
  acks; v2: an ``acknowledgments`` section) and the pack is sent once the client says
  ``done`` or the server is ready (every want reaches something the client has);
- shallow requests are cut by :mod:`gitsync.wire.shallow`, filters applied by
  :mod:`gitsync.wire.object_filter`, the objects chosen by :mod:`gitsync.wire.object_walk`, and the
  pack streamed by :mod:`gitsync.packs.stream` from the entries already stored, deltas
  included. A clone of everything takes its objects from the cached reachable set.

The negotiation is :mod:`gitsync.wire.negotiation`'s, the choice of objects
:mod:`gitsync.wire.fetch_plan`'s; this module speaks the two protocols.

Errors are answered in the protocol (``ERR <reason>``), which git prints as
``fatal: remote error: <reason>``.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Iterator
from pathlib import Path

from ..packs.stream import PackStats
from .fetch_plan import FetchSession, object_filter, pack_for, shallow_for, wanted
from .negotiation import Negotiation
from .object_filter import FilterError
from .object_walk import NotACommit
from .shallow import ShallowError, ShallowInfo
from .upload_wire import (
    BAND_64K,
    DELIM,
    FLUSH,
    FetchRequest,
    LsRefsRequest,
    UploadError,
    pkt,
    read_v0,
    read_v2,
    sideband,
    v0_advertisement,
    v2_advertisement,
)

__all__ = ["advertisement", "answer", "protocol_version"]

log = logging.getLogger("gitsync.upload_pack")


def protocol_version(header: str | None) -> int:
    """The protocol a ``Git-Protocol`` header asks for: 2, or 0 (v1 is answered as v0)."""
    for part in (header or "").split(":"):
        if part.strip() == "version=2":
            return 2
    return 0


def advertisement(repo_path: Path, version: int) -> bytes:
    """The body of ``GET info/refs?service=git-upload-pack`` (v0: without the ``# service``
    header, which the caller adds)."""
    if version == 2:
        return v2_advertisement()
    session = FetchSession(repo_path)
    try:
        return v0_advertisement(session.refs.refs, session.peel_refs(), session.refs.head)
    finally:
        session.close()


def answer(
    repo_path: Path, body: bytes, version: int, stats: PackStats | None = None
) -> Generator[bytes, None, None]:
    """The response to ``POST git-upload-pack`` with the (decoded) request ``body``, in
    pieces; a refused request is answered with ``ERR``. The repository stays open until
    the iterator is exhausted or closed."""
    session = FetchSession(repo_path)
    try:
        try:
            parts = _v2(session, body, stats) if version == 2 else _v0(session, body, stats)
            first = next(parts, None)
        except (UploadError, ShallowError, FilterError, NotACommit) as exc:
            log.info("%s: refused a fetch: %s", repo_path, exc)
            yield pkt(b"ERR " + str(exc).encode("utf-8", "replace") + b"\n")
            return
        if first is not None:
            yield first
            yield from parts
    finally:
        session.close()


# -- v2 ---------------------------------------------------------------------------------------


def _v2(session: FetchSession, body: bytes, stats: PackStats | None) -> Iterator[bytes]:
    parsed = read_v2(body)
    if parsed is None:
        return iter([FLUSH])
    _, request = parsed
    if isinstance(request, LsRefsRequest):
        return iter([_ls_refs(session, request)])
    return _v2_fetch(session, request, stats)


def _ls_refs(session: FetchSession, request: LsRefsRequest) -> bytes:
    refs = session.refs
    peeled = session.peel_refs() if request.peel else {}

    def wanted(name: bytes) -> bool:
        return not request.prefixes or any(name.startswith(p) for p in request.prefixes)

    out: list[bytes] = []
    for name in sorted(refs.refs, key=lambda n: (n != b"HEAD", n)):
        if not wanted(name):
            continue
        line = refs.refs[name] + b" " + name
        if request.symrefs and name == b"HEAD" and refs.head is not None:
            line += b" symref-target:" + refs.head
        if name in peeled:
            line += b" peeled:" + peeled[name]
        out.append(pkt(line + b"\n"))
    if b"HEAD" not in refs.refs and refs.head is not None and request.unborn and wanted(b"HEAD"):
        line = b"unborn HEAD"
        if request.symrefs:
            line += b" symref-target:" + refs.head
        out.append(pkt(line + b"\n"))
    return b"".join(out) + FLUSH


def _v2_fetch(
    session: FetchSession, request: FetchRequest, stats: PackStats | None
) -> Iterator[bytes]:
    wants = wanted(session, request)
    chosen_filter = object_filter(request)
    if not wants and not request.wait_for_done:
        yield FLUSH
        return
    negotiation = Negotiation(session, request, wants)
    head: list[bytes] = []
    if request.haves and not request.done:
        head.append(pkt(b"acknowledgments\n"))
        if not negotiation.have_obj:
            head.append(pkt(b"NAK\n"))
        head += [pkt(b"ACK " + sha + b"\n") for sha in negotiation.have_obj]
        if request.wait_for_done or not negotiation.ready():
            yield b"".join(head) + FLUSH
            return
        head.append(pkt(b"ready\n") + DELIM)
    shallow = shallow_for(session, request, wants)
    if request.client_shallow or request.depth or request.deepen_since or request.deepen_not:
        head.append(pkt(b"shallow-info\n"))
        head += [pkt(b"shallow " + sha + b"\n") for sha in shallow.shallow]
        head += [pkt(b"unshallow " + sha + b"\n") for sha in shallow.unshallow]
        head.append(DELIM)
    if request.want_refs:
        head.append(pkt(b"wanted-refs\n"))
        head += [pkt(session.refs.refs[ref] + b" " + ref + b"\n") for ref in request.want_refs]
        head.append(DELIM)
    head.append(pkt(b"packfile\n"))
    pieces = pack_for(session, request, wants, negotiation.have_obj, shallow, chosen_filter, stats)
    first = next(pieces)
    yield b"".join(head)
    yield from _banded(first, pieces, BAND_64K)


# -- v0 ---------------------------------------------------------------------------------------


def _v0(session: FetchSession, body: bytes, stats: PackStats | None) -> Iterator[bytes]:
    request = read_v0(body)
    if request is None:
        return
    wants = wanted(session, request)
    chosen_filter = object_filter(request)
    out: list[bytes] = []
    shallow = ShallowInfo(grafts=frozenset(request.client_shallow))
    if request.client_shallow or request.depth or request.deepen_since or request.deepen_not:
        shallow = shallow_for(session, request, wants)
        if request.depth or request.deepen_since or request.deepen_not:
            out += [pkt(b"shallow " + sha + b"\n") for sha in shallow.shallow]
            out += [pkt(b"unshallow " + sha + b"\n") for sha in shallow.unshallow]
            out.append(FLUSH)
    if request.needs_only:
        yield b"".join(out)
        return
    negotiation = Negotiation(session, request, wants)
    send_pack = negotiation.v0_acks(out)
    if not send_pack:
        yield b"".join(out)
        return
    pieces = pack_for(session, request, wants, negotiation.have_obj, shallow, chosen_filter, stats)
    first = next(pieces)
    yield b"".join(out)
    if not request.sideband:
        yield first
        yield from pieces
        return
    yield from _banded(first, pieces, request.sideband)


def _banded(first: bytes, pieces: Iterator[bytes], limit: int) -> Iterator[bytes]:
    """The pack on side-band 1, then a flush. A failure once the pack has begun (a damaged
    object, say) is told on band 3, which git prints before it gives up, and logged."""
    try:
        yield b"".join(sideband(1, first, limit))
        for piece in pieces:
            yield b"".join(sideband(1, piece, limit))
    except Exception as exc:
        log.exception("a pack failed half-way")
        yield b"".join(sideband(3, f"pack failed on the server: {exc}\n".encode(), limit))
        return
    yield FLUSH


# -- both -------------------------------------------------------------------------------------
