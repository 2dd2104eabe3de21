"""The wire format of a push (receive-pack, protocol v0/v1): the ref advertisement, the
request's commands and capabilities, and the report of what became of each command.

A request is pkt-lines ``<old> <new> <ref>`` (the first with ``NUL`` and the client's
capabilities), optionally preceded by ``shallow <id>`` lines, then a flush, then the pack if any
command creates or updates a ref. The report is ``unpack ok`` or ``unpack <reason>``, then
``ok <ref>`` or ``ng <ref> <reason>`` per command, then a flush; with ``side-band-64k`` it is
sent on band 1, after any messages on band 2, which git prints as ``remote: <message>``. git
prints an ``unpack`` reason as ``error: remote unpack failed: <reason>`` and an ``ng`` reason as
``! [remote rejected] <branch> -> <branch> (<reason>)``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from dulwich.protocol import pkt_line

__all__ = [
    "CAPABILITIES",
    "ZERO",
    "Command",
    "MalformedPush",
    "PushRequest",
    "TruncatedPush",
    "advertisement",
    "read_request",
    "report",
]

ZERO = b"0" * 40
CAPABILITIES = (
    b"report-status",
    b"delete-refs",
    b"side-band-64k",
    b"quiet",
    b"atomic",
    b"ofs-delta",
    b"agent=collab-engine",
)
"""What the server offers, and all that it implements: no push options, no push
certificates, no shallow updates."""
MAX_REASON = 400
"""Longest reason sent for one command (bytes); git prints it on one line."""
_ID = re.compile(rb"[0-9a-f]{40}")
_LENGTH = re.compile(rb"[0-9a-fA-F]{4}")
_REF = re.compile(rb"[^\x00-\x20\x7f]+")
"""A ref name as it can be echoed in a report (the name's own rules are checked later)."""
_BAND = 65515
"""Largest payload of one ``side-band-64k`` packet."""


class MalformedPush(ValueError):
    """The request does not follow the protocol."""


class TruncatedPush(MalformedPush):
    """The request ends before its commands do."""


@dataclass(frozen=True, slots=True)
class Command:
    """Set ``ref`` from ``old`` to ``new`` (hex ids; :data:`ZERO` for none)."""

    old: bytes
    new: bytes
    ref: bytes

    @property
    def deletes(self) -> bool:
        return self.new == ZERO


@dataclass(frozen=True, slots=True)
class PushRequest:
    commands: tuple[Command, ...]
    capabilities: frozenset[bytes]
    shallow: tuple[bytes, ...] = ()

    @property
    def needs_pack(self) -> bool:
        """Whether a pack follows the commands (some command creates or updates a ref)."""
        return any(not command.deletes for command in self.commands)


def advertisement(refs: Mapping[bytes, bytes]) -> bytes:
    """The refs offered to a pushing client (name -> hex id), with the capabilities."""
    caps = b"\0" + b" ".join(CAPABILITIES) + b"\n"
    items = sorted(refs.items()) or [(b"capabilities^{}", ZERO)]
    lines = [pkt_line(items[0][1] + b" " + items[0][0] + caps)]
    lines += [pkt_line(sha + b" " + name + b"\n") for name, sha in items[1:]]
    return b"".join(lines) + pkt_line(None)


def _read_pkt(read: Callable[[int], bytes]) -> bytes | None:
    """One pkt-line's payload; None for a flush."""
    head = read(4)
    if len(head) < 4:
        raise TruncatedPush("the push request ends early")
    if not _LENGTH.fullmatch(head):
        raise MalformedPush("bad pkt-line")
    size = int(head, 16)
    if size == 0:
        return None
    if size < 4:
        raise MalformedPush("bad pkt-line")
    data = read(size - 4)
    if len(data) != size - 4:
        raise TruncatedPush("the push request ends early")
    return data


def read_request(read: Callable[[int], bytes]) -> PushRequest | None:
    """The commands of a push, read up to the flush that ends them (the pack, if any, is
    what ``read`` returns next); None for a request with no commands (git's probe)."""
    commands: list[Command] = []
    capabilities: frozenset[bytes] = frozenset()
    shallow: list[bytes] = []
    while (line := _read_pkt(read)) is not None:
        line = line.removesuffix(b"\n")
        if not commands and line.startswith(b"shallow "):
            if not _ID.fullmatch(line[8:]):
                raise MalformedPush(f"bad shallow line {line[:100]!r}")
            shallow.append(line[8:])
            continue
        if not commands:
            line, _, caps = line.partition(b"\0")
            capabilities = frozenset(caps.split())
        parts = line.split(b" ")
        if (
            len(parts) != 3
            or not _ID.fullmatch(parts[0])
            or not _ID.fullmatch(parts[1])
            or not _REF.fullmatch(parts[2])
        ):
            raise MalformedPush(f"bad push command {line[:200]!r}")
        commands.append(Command(parts[0], parts[1], parts[2]))
    if shallow and not commands:
        raise MalformedPush("shallow lines without commands")
    if not commands:
        return None
    return PushRequest(tuple(commands), capabilities, tuple(shallow))


def _reason(text: str | bytes) -> bytes:
    """A reason on one line, at most :data:`MAX_REASON` bytes."""
    raw = text.encode("utf-8", "replace") if isinstance(text, str) else text
    raw = b" ".join(raw.split(b"\n")).replace(b"\0", b" ").strip()
    return raw if len(raw) <= MAX_REASON else raw[: MAX_REASON - 3] + b"..."


def report(
    request: PushRequest,
    unpack: str | None,
    statuses: Sequence[str | None],
    messages: Iterable[str] = (),
) -> bytes:
    """The response to ``request``: ``unpack`` is None when the pack was taken (or there was
    none), else why not; ``statuses[i]`` is None when ``request.commands[i]`` was done, else
    why not. ``messages`` go on band 2 when the client asked for side bands (git prints them
    as ``remote: <message>``); a client that asked for no report gets none."""
    caps = request.capabilities
    lines = [pkt_line(b"unpack " + (b"ok" if unpack is None else _reason(unpack)) + b"\n")]
    for command, why in zip(request.commands, statuses, strict=True):
        if why is None:
            lines.append(pkt_line(b"ok " + command.ref + b"\n"))
        else:
            lines.append(pkt_line(b"ng " + command.ref + b" " + _reason(why) + b"\n"))
    status = b"".join(lines) + pkt_line(None) if b"report-status" in caps else b""
    if b"side-band-64k" not in caps:
        return status
    out = [_band(2, text.rstrip("\n").encode("utf-8", "replace") + b"\n") for text in messages]
    out.append(_band(1, status))
    return b"".join(out) + pkt_line(None)


def _band(channel: int, data: bytes) -> bytes:
    return b"".join(
        pkt_line(bytes([channel]) + data[i : i + _BAND]) for i in range(0, len(data), _BAND)
    )
