"""The negotiation of a fetch: which of the client's ``have`` lines name objects the server
has, the acknowledgments git expects for them, and whether the server is ready to send the pack
(every want reaches something the client has: git's ``ok_to_give_up``).

Over stateless HTTP each request carries all of the client's state, so nothing is kept
between requests. v0 acknowledges as git's ``upload-pack`` does in each of its modes (single
ACK, ``multi_ack``, ``multi_ack_detailed``, with ``no-done``); v2 lists the common objects in
an ``acknowledgments`` section (:mod:`gitsync.wire.upload_pack`).
"""

from __future__ import annotations

from ..packs.source import COMMIT
from .fetch_plan import FetchSession
from .object_walk import NotACommit
from .upload_wire import FetchRequest, pkt

__all__ = ["Negotiation"]


class Negotiation:
    """What the client has, as far as its haves say (git's ``THEY_HAVE``)."""

    def __init__(self, session: FetchSession, request: FetchRequest, wants: list[bytes]) -> None:
        self.session = session
        self.request = request
        self.wants = wants
        self.have_obj: list[bytes] = []
        self.they_have: set[bytes] = set()
        self.oldest: int | None = None
        self.results: list[bool] = []
        """Per have line: whether the server has the object."""
        for sha in request.haves:
            self.results.append(self._got(sha))

    def _got(self, sha: bytes) -> bool:
        if sha not in self.session.objects:
            return False
        try:
            info = self.session.history.commit(sha)
        except NotACommit:
            info = None
        if info is not None:
            if self.oldest is None or info.time < self.oldest:
                self.oldest = info.time
            self.they_have.update(info.parents)
        if sha not in self.they_have:
            self.they_have.add(sha)
            self.have_obj.append(sha)
        return True

    def ready(self) -> bool:
        """Whether every want reaches something the client has (git's ``ok_to_give_up``)."""
        if not self.have_obj:
            return False
        history = self.session.history
        oldest = self.oldest or 0
        for want in self.wants:
            sha, kind, _ = history.peel(want)
            if kind != COMMIT:
                continue
            seen: set[bytes] = set()
            stack = [sha]
            found = False
            while stack and not found:
                one = stack.pop()
                if one in seen:
                    continue
                seen.add(one)
                if one in self.they_have:
                    found = True
                    break
                info = history.commit(one)
                if info.time < oldest:
                    continue
                stack.extend(info.parents)
            if not found:
                return False
        return True

    def v0_acks(self, out: list[bytes]) -> bool:
        """Append the v0 acknowledgments to ``out``; whether the pack follows."""
        request = self.request
        multi_ack = request.multi_ack
        got_common = got_other = sent_ready = False
        last = b""
        count = 0
        for sha, ours in zip(request.haves, self.results, strict=True):
            if not ours:
                got_other = True
                if multi_ack and self.ready():
                    if multi_ack == 2:
                        sent_ready = True
                        out.append(pkt(b"ACK " + sha + b" ready\n"))
                    else:
                        out.append(pkt(b"ACK " + sha + b" continue\n"))
                continue
            got_common = True
            last = sha
            count += 1
            if multi_ack == 2:
                out.append(pkt(b"ACK " + sha + b" common\n"))
            elif multi_ack:
                out.append(pkt(b"ACK " + sha + b" continue\n"))
            elif len(self.have_obj) == 1 and count == 1:
                out.append(pkt(b"ACK " + sha + b"\n"))
        if request.done:
            if self.have_obj:
                if multi_ack:
                    out.append(pkt(b"ACK " + (last or self.have_obj[-1]) + b"\n"))
            else:
                out.append(pkt(b"NAK\n"))
            return True
        if multi_ack == 2 and got_common and not got_other and self.ready():
            sent_ready = True
            out.append(pkt(b"ACK " + last + b" ready\n"))
        if not self.have_obj or multi_ack:
            out.append(pkt(b"NAK\n"))
        if request.no_done and sent_ready:
            out.append(pkt(b"ACK " + last + b"\n"))
            return True
        return False
