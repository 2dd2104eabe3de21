"""The wire format of a fetch (upload-pack), protocol v0/v1 and v2, over stateless HTTP.

Reading: :func:`read_v0` and :func:`read_v2` turn a request body into a :class:`FetchRequest`
(or, for v2, an :class:`LsRefsRequest`), raising :class:`UploadError` for anything malformed;
its message is what the client is told. Writing: pkt-lines, side-band packets, the v0 ref
advertisement and the v2 capability advertisement.

v0 (``git -c protocol.version=0``): ``want <id> <capabilities>``, further ``want`` lines,
``shallow``/``deepen``/``deepen-since``/``deepen-not``/``filter`` lines, a flush, then
``have`` lines ended by a flush (one round of negotiation: the answer is acknowledgments
only) or by ``done`` (the answer ends with the pack).

v2 (git's default): ``command=<name>``, capability lines, a delimiter, the command's
arguments, a flush (see ``Documentation/gitprotocol-v2.txt`` in git).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "BAND_64K",
    "DELIM",
    "FLUSH",
    "V0_CAPABILITIES",
    "V2_CAPABILITIES",
    "FetchRequest",
    "LsRefsRequest",
    "UploadError",
    "pkt",
    "read_v0",
    "read_v2",
    "sideband",
    "v0_advertisement",
    "v2_advertisement",
]

FLUSH = b"0000"
DELIM = b"0001"
AGENT = b"agent=collab-engine"
V0_CAPABILITIES = (
    b"multi_ack",
    b"multi_ack_detailed",
    b"no-done",
    b"thin-pack",
    b"side-band",
    b"side-band-64k",
    b"ofs-delta",
    b"shallow",
    b"deepen-since",
    b"deepen-not",
    b"deepen-relative",
    b"no-progress",
    b"include-tag",
    b"allow-tip-sha1-in-want",
    b"allow-reachable-sha1-in-want",
    b"filter",
    b"object-format=sha1",
    AGENT,
)
"""What a v0 client is offered: all of it implemented."""
V2_CAPABILITIES = (
    AGENT,
    b"ls-refs=unborn",
    b"fetch=shallow wait-for-done filter ref-in-want",
    b"object-format=sha1",
)
MAX_PKT = 65520
BAND_64K = 65515
BAND_SMALL = 995
_ID = re.compile(rb"[0-9a-f]{40}")
_LENGTH = re.compile(rb"[0-9a-fA-F]{4}")
MAX_LINES = 1_000_000
"""Most lines read from one request."""


class UploadError(ValueError):
    """A request the server refuses; the message is sent to the client as ``ERR``."""


@dataclass(slots=True)
class FetchRequest:
    wants: list[bytes] = field(default_factory=list)
    want_refs: list[bytes] = field(default_factory=list)
    haves: list[bytes] = field(default_factory=list)
    done: bool = False
    client_shallow: list[bytes] = field(default_factory=list)
    depth: int = 0
    deepen_relative: bool = False
    deepen_since: int | None = None
    deepen_not: list[bytes] = field(default_factory=list)
    filter_spec: str | None = None
    thin_pack: bool = False
    ofs_delta: bool = False
    include_tag: bool = False
    no_progress: bool = False
    sideband: int = 0
    """Largest side-band payload (0: the pack is sent raw, v0 without side-band)."""
    multi_ack: int = 0
    """0: single ACK; 1: ``multi_ack``; 2: ``multi_ack_detailed`` (v0)."""
    no_done: bool = False
    wait_for_done: bool = False
    needs_only: bool = False
    """v0: the body ended after the wants (a stateless client reads the shallow list first)."""
    capabilities: frozenset[bytes] = frozenset()


@dataclass(frozen=True, slots=True)
class LsRefsRequest:
    symrefs: bool = False
    peel: bool = False
    unborn: bool = False
    prefixes: tuple[bytes, ...] = ()


class _Lines:
    """pkt-lines of a request body: payloads (newline removed), or FLUSH, DELIM."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.pos = 0
        self.count = 0

    def next(self) -> bytes | None:
        """The next payload, ``FLUSH`` or ``DELIM``; None at the end of the body."""
        if self.pos >= len(self.body):
            return None
        self.count += 1
        if self.count > MAX_LINES:
            raise UploadError("too many lines in the request")
        head = self.body[self.pos : self.pos + 4]
        if len(head) < 4 or not _LENGTH.fullmatch(head):
            raise UploadError("protocol error: bad pkt-line")
        size = int(head, 16)
        if size in (0, 1, 2):
            self.pos += 4
            return (FLUSH, DELIM, b"0002")[size]
        if size < 4:
            raise UploadError("protocol error: bad pkt-line")
        payload = self.body[self.pos + 4 : self.pos + size]
        if len(payload) != size - 4:
            raise UploadError("protocol error: the request ends inside a pkt-line")
        self.pos += size
        return payload.removesuffix(b"\n")


def _object_id(text: bytes, what: str) -> bytes:
    if not _ID.fullmatch(text):
        raise UploadError(f"protocol error: expected an object id in {what}, got '{_show(text)}'")
    return text


def _show(text: bytes) -> str:
    return text[:100].decode("utf-8", "replace")


def _number(text: bytes, what: str) -> int:
    if not text.isdigit() or len(text) > 18:
        raise UploadError(f"invalid {what}: {_show(text)}")
    return int(text)


def _shallow_arg(request: FetchRequest, line: bytes) -> bool:
    """Take a shallow-related line of either protocol; False if it is not one."""
    if line.startswith(b"shallow "):
        request.client_shallow.append(_object_id(line[8:], "a shallow line"))
    elif line.startswith(b"deepen-since "):
        request.deepen_since = _number(line[13:], "deepen-since")
    elif line.startswith(b"deepen-not "):
        request.deepen_not.append(line[11:])
    elif line.startswith(b"deepen "):
        depth = _number(line[7:], "deepen")
        if depth <= 0:
            raise UploadError(f"invalid deepen: {_show(line)}")
        request.depth = depth
    elif line == b"deepen-relative":
        request.deepen_relative = True
    else:
        return False
    return True


def read_v0(body: bytes) -> FetchRequest | None:
    """A v0/v1 upload-pack request; None for one with no wants."""
    lines = _Lines(body)
    request = FetchRequest()
    first = True
    while (line := lines.next()) not in (FLUSH, None):
        assert line is not None
        if line in (DELIM, b"0002"):
            raise UploadError("protocol error: unexpected special packet")
        if _shallow_arg(request, line):
            continue
        if line.startswith(b"filter "):
            if b"filter" not in request.capabilities:
                raise UploadError("filtering capability not negotiated")
            request.filter_spec = line[7:].decode("utf-8", "replace")
            continue
        if not line.startswith(b"want "):
            raise UploadError(f"protocol error: expected to get object ID, not '{_show(line)}'")
        request.wants.append(_object_id(line[5:45], "a want line"))
        if first:
            first = False
            caps = frozenset(line[46:].split())
            request.capabilities = caps
            _v0_capabilities(request, caps)
    if not request.wants:
        return None
    if lines.pos >= len(body):
        request.needs_only = True
        return request
    while (line := lines.next()) is not None:
        if line == FLUSH:
            return request
        if line == b"done":
            request.done = True
            return request
        if not line.startswith(b"have "):
            raise UploadError(f"protocol error: expected SHA1 list, got '{_show(line)}'")
        request.haves.append(_object_id(line[5:], "a have line"))
    return request


def _v0_capabilities(request: FetchRequest, caps: frozenset[bytes]) -> None:
    request.multi_ack = 2 if b"multi_ack_detailed" in caps else 1 if b"multi_ack" in caps else 0
    request.no_done = b"no-done" in caps
    request.thin_pack = b"thin-pack" in caps
    request.ofs_delta = b"ofs-delta" in caps
    request.include_tag = b"include-tag" in caps
    request.no_progress = b"no-progress" in caps
    request.deepen_relative = b"deepen-relative" in caps
    if b"side-band-64k" in caps:
        request.sideband = BAND_64K
    elif b"side-band" in caps:
        request.sideband = BAND_SMALL


def read_v2(body: bytes) -> tuple[bytes, FetchRequest | LsRefsRequest] | None:
    """(command, its arguments) of a v2 request; None for an empty one. Commands other than
    ``ls-refs`` and ``fetch`` are refused."""
    lines = _Lines(body)
    line = lines.next()
    if line in (None, FLUSH):
        return None
    assert line is not None
    if not line.startswith(b"command="):
        raise UploadError("protocol error: expected a command")
    command = line[8:]
    if command not in (b"ls-refs", b"fetch"):
        raise UploadError(f"invalid command '{_show(command)}'")
    capabilities: list[bytes] = []
    while (line := lines.next()) not in (DELIM, FLUSH):
        if line is None or line == b"0002":
            raise UploadError("protocol error: the request ends early")
        capabilities.append(line)
    for capability in capabilities:
        if capability.startswith(b"object-format=") and capability != b"object-format=sha1":
            raise UploadError(f"unsupported object format '{_show(capability[14:])}'")
    args: list[bytes] = []
    if line == DELIM:
        while (line := lines.next()) != FLUSH:
            if line is None or line in (DELIM, b"0002"):
                raise UploadError(f"expected flush after {command.decode()} arguments")
            args.append(line)
    if command == b"ls-refs":
        return command, _ls_refs(args)
    return command, _fetch(args)


def _ls_refs(args: Sequence[bytes]) -> LsRefsRequest:
    prefixes: list[bytes] = []
    symrefs = peel = unborn = False
    for arg in args:
        if arg == b"symrefs":
            symrefs = True
        elif arg == b"peel":
            peel = True
        elif arg == b"unborn":
            unborn = True
        elif arg.startswith(b"ref-prefix "):
            prefixes.append(arg[11:])
        else:
            raise UploadError(f"unexpected line: '{_show(arg)}'")
    return LsRefsRequest(symrefs, peel, unborn, tuple(prefixes))


_FLAGS = {
    b"thin-pack": "thin_pack",
    b"ofs-delta": "ofs_delta",
    b"no-progress": "no_progress",
    b"include-tag": "include_tag",
    b"done": "done",
    b"wait-for-done": "wait_for_done",
    b"deepen-relative": "deepen_relative",
}


def _fetch(args: Sequence[bytes]) -> FetchRequest:
    request = FetchRequest(sideband=BAND_64K)
    for arg in args:
        if arg.startswith(b"want "):
            request.wants.append(_object_id(arg[5:], "a want line"))
        elif arg.startswith(b"want-ref "):
            ref = arg[9:]
            if ref in request.want_refs:
                raise UploadError(f"duplicate want-ref {_show(ref)}")
            request.want_refs.append(ref)
        elif arg.startswith(b"have "):
            request.haves.append(_object_id(arg[5:], "a have line"))
        elif arg in _FLAGS:
            setattr(request, _FLAGS[arg], True)
        elif _shallow_arg(request, arg):
            continue
        elif arg.startswith(b"filter "):
            if request.filter_spec is not None:
                raise UploadError("multiple filter-specs cannot be combined")
            request.filter_spec = arg[7:].decode("utf-8", "replace")
        else:
            raise UploadError(f"unexpected line: '{_show(arg)}'")
    return request


def pkt(payload: bytes) -> bytes:
    """One pkt-line (payloads over the limit are the caller's mistake)."""
    if len(payload) + 4 > MAX_PKT:
        raise ValueError("pkt-line too long")
    return b"%04x" % (len(payload) + 4) + payload


def sideband(band: int, data: bytes, limit: int = BAND_64K) -> Iterator[bytes]:
    """``data`` on side-band ``band``, in packets of at most ``limit`` payload bytes."""
    prefix = bytes([band])
    for start in range(0, len(data), limit):
        piece = data[start : start + limit]
        yield b"%04x" % (len(piece) + 5) + prefix + piece


def v0_advertisement(
    refs: Mapping[bytes, bytes], peeled: Mapping[bytes, bytes], head: bytes | None
) -> bytes:
    """The v0 ref advertisement (without the smart-HTTP ``# service`` header): ``refs``
    (name -> id, HEAD first if it points somewhere), ``peeled`` (tag name -> what it peels
    to), ``head`` the branch HEAD names, for the ``symref`` capability."""
    caps = list(V0_CAPABILITIES)
    if head is not None and b"HEAD" in refs:
        caps.insert(-1, b"symref=HEAD:" + head)
    names = sorted(refs, key=lambda name: (name != b"HEAD", name))
    if not names:
        return pkt(b"0" * 40 + b" capabilities^{}\0" + b" ".join(caps) + b"\n") + FLUSH
    out: list[bytes] = []
    for i, name in enumerate(names):
        line = refs[name] + b" " + name
        if i == 0:
            line += b"\0" + b" ".join(caps)
        out.append(pkt(line + b"\n"))
        if name in peeled:
            out.append(pkt(peeled[name] + b" " + name + b"^{}\n"))
    return b"".join(out) + FLUSH


def v2_advertisement() -> bytes:
    return pkt(b"version 2\n") + b"".join(pkt(cap + b"\n") for cap in V2_CAPABILITIES) + FLUSH
