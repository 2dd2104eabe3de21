"""The completion operations: ``complete``, ``complete.accept``, ``complete.cancel`` and
``complete.metrics``, with stale-request cancellation, a result cache and a rate limit.

A request names a document and a cursor: on ``/ws`` a document the connection has open; over
HTTP (``POST /api/complete``) any document, which the server opens itself and keeps loaded
while the answer may be accepted. With ``stream`` the text also arrives in pieces while it is
generated (``/ws`` events, or ``POST /api/complete/stream``: see ``streaming.py``). The
prompt is read from the live document at that moment and the cursor is anchored so that it
follows later edits. Every answer has an id; accepting an empty one inserts nothing. A
newer request from the same connection for the same document cancels the older one; so
does the requester's disconnect. Workers keep each (connection, document)'s prompt cache.
Answers are cached by (document text, cursor, options). Accepting inserts the text
at the anchor as an edit with origin ``ai``, on behalf of the user who accepts; it is stored
and broadcast like any other edit.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gitsync import Repositories
from protocol.errors import ErrorCode, ProtocolError
from protocol.names import DocId

from ..live.offsets import codepoint_to_utf16, utf8_offset, utf16_to_codepoint
from ..live.origin import Origin
from ..live.rate_limit import RateLimiter
from ..live.room import Room
from ..live.rooms import Rooms
from ..server.config import ServerConfig
from ..server.ops import CallContext, arg_int, arg_str
from .anchors import Anchor, Anchors, byte_to_codepoint
from .backend import CompletionBackend
from .context import ContextGatherer, open_rooms
from .executor import Executor, JobOutput, JobSpec
from .metrics import CompletionMetrics
from .pool import LocalWorker, QueuedJob, WorkerPool

__all__ = ["CompletionService"]

log = logging.getLogger("collab.completion")

OFFER_TTL = 120.0  # seconds an answered completion can still be accepted
HELD_OFFERS = 16
"""Offers over HTTP one person may have at once, each keeping its document loaded; past it,
the oldest is dropped (accepting it answers 4004)."""
CACHE_TTL = 60.0
SWEEP_EVERY = 5.0  # seconds between sweeps of expired offers and cached completions
CACHE_SIZE = 1024
_DEFAULT_TOKENS = {"line": 48, "block": 256}

Owner = tuple[object, str]  # (connection, or the user for HTTP) and document key
_CacheKey = tuple[str, bytes, int, str, int]  # doc, text digest, index, mode, tokens
Emit = Callable[[str], None]  # a piece of a streaming completion's text
STREAM_TOPIC = "complete.stream"


@dataclass(eq=False)
class _Request:
    """A request in flight, so that a newer one can cancel it."""

    user: str = ""
    job: QueuedJob | None = None
    superseded: bool = False


@dataclass(eq=False)
class _Offer:
    """An answered completion that its user may accept. An empty one has no anchor (there
    is nothing to insert); one asked for over HTTP holds its room loaded (``hold``)."""

    id: str
    user: str
    owner: Owner
    anchor: Anchor | None
    text: str
    doc: str
    index: int
    hold: _Hold | None = None
    unit: str = "codepoint"  # the request's: ``complete.accept`` answers in it too
    created: float = field(default_factory=time.monotonic)
    # made with ``anchor``, sticking after: between them, what was typed there since
    end: Anchor | None = None


class _Hold:
    """A room borrowed for an HTTP request (``Rooms.borrow``), kept loaded until released:
    the server opens the document itself when no connection has it open."""

    def __init__(self, rooms: Rooms, doc_id: DocId) -> None:
        self._borrowed = rooms.borrow(doc_id)
        self._released = False

    async def enter(self) -> Room:
        return await self._borrowed.__aenter__()

    def release(self, tasks: set[asyncio.Task[Any]]) -> None:
        """Give the room back (it unloads after its grace period if nobody else has it)."""
        if self._released:
            return
        self._released = True
        task = asyncio.get_running_loop().create_task(self._borrowed.__aexit__(None, None, None))
        tasks.add(task)
        task.add_done_callback(tasks.discard)


class CompletionService:
    """Owns the worker pool, the embedded worker, and the state of every request."""

    def __init__(
        self,
        config: ServerConfig,
        rooms: Rooms,
        repos: Repositories,
        backend: CompletionBackend | None,
    ) -> None:
        self.config = config
        self.rooms = rooms
        self.backend = backend
        self.timeout = config.completion_timeout
        self.max_tokens = config.completion_max_tokens
        self.max_chars = config.completion_max_chars
        self.pool = WorkerPool(max_queue=config.completion_queue)
        self.metrics = CompletionMetrics()
        self.limiter = RateLimiter(config.completion_rate, config.completion_burst)
        self.context = ContextGatherer(rooms, repos, budget=config.completion_prompt_tokens)
        self.anchors = Anchors()
        self.embedded: LocalWorker | None = None
        self._active: dict[Owner, _Request] = {}
        self._offers: dict[str, _Offer] = {}
        self._by_owner: dict[Owner, _Offer] = {}
        self._cache: collections.OrderedDict[_CacheKey, tuple[float, JobOutput]] = (
            collections.OrderedDict()
        )
        self._hooked: set[int] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._releasing: set[asyncio.Task[Any]] = set()  # rooms held for HTTP, given back

    # -- lifetime ----------------------------------------------------------------------------

    async def start(self) -> None:
        if self.backend is not None:
            await self.backend.start()
            executor = Executor(
                self.backend,
                max_prompt_tokens=self.config.completion_prompt_tokens,
                max_chars=self.max_chars,
            )
            self.embedded = LocalWorker(self.pool, executor)
            self.pool.add(self.embedded, quiet=True)
        self._sweeper = asyncio.create_task(self._sweep(), name="completion sweeper")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        for offer in list(self._offers.values()):
            self._drop_offer(offer)
        await asyncio.gather(*self._releasing, return_exceptions=True)
        self.pool.close(ErrorCode.SHUTTING_DOWN, "server stopping")
        if self.embedded is not None:
            await self.embedded.stop()
            self.pool.remove(self.embedded, "server stopping", quiet=True)
        if self.backend is not None:
            await self.backend.stop()
        self.anchors.clear()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_EVERY)
            try:
                self.sweep(time.monotonic())
            except Exception:  # a bad entry must not end the sweeping for good
                log.exception("completion: sweeping expired offers failed; trying again later")

    def sweep(self, now: float) -> None:
        """Drop the offers and cached completions that have expired by ``now``."""
        for offer in [o for o in self._offers.values() if now - o.created > OFFER_TTL]:
            self._drop_offer(offer)
        while self._cache and now - next(iter(self._cache.values()))[0] > CACHE_TTL:
            self._cache.popitem(last=False)

    # -- complete ----------------------------------------------------------------------------

    async def complete(
        self, ctx: CallContext, args: dict[str, Any], emit: Emit | None = None
    ) -> dict[str, Any]:
        """``complete(doc, index, mode="line"|"block", max_tokens?, unit="codepoint"|"utf16",
        before?, stream?)``. ``before``: the text just before the cursor as the client sees
        it (at most 64 characters); when the document's text before ``index`` does not end
        with it (an edit the client has not seen yet), the nearest place nearby where it does
        is used (the answer's ``index`` says where), else CONFLICT. With ``stream`` (a
        number or string the client chooses) on ``/ws``, the text is also sent in pieces as
        it is generated, as events on topic ``complete.stream`` with ``{stream, doc,
        text}``; ``emit`` receives them instead (``POST /api/complete/stream``)."""
        started = time.perf_counter()
        self.metrics.count("requests")
        try:
            return await self._complete(ctx, args, started, emit)
        except ProtocolError as exc:
            self.metrics.error(exc.code.name)
            raise

    async def _complete(
        self, ctx: CallContext, args: dict[str, Any], started: float, emit: Emit | None
    ) -> dict[str, Any]:
        mode = arg_str(args, "mode", "line")
        if mode not in _DEFAULT_TOKENS:
            raise ProtocolError(ErrorCode.MALFORMED, "mode must be 'line' or 'block'")
        unit = _unit(args)
        max_tokens = min(arg_int(args, "max_tokens", _DEFAULT_TOKENS[mode]), self.max_tokens)
        if max_tokens < 1:
            raise ProtocolError(ErrorCode.MALFORMED, "max_tokens must be positive")
        doc = arg_str(args, "doc")
        index = arg_int(args, "index")
        before = _before(args)
        emit = emit or _stream_events(ctx, args)
        if not self.limiter.allow(ctx.identity.user):
            raise ProtocolError(ErrorCode.RATE_LIMITED, "too many completion requests")
        room, hold = await self._room(ctx, doc)
        try:
            return await self._complete_in(
                ctx, room, hold, index, before, mode, unit, max_tokens, started, emit
            )
        except BaseException:
            if hold is not None:
                hold.release(self._releasing)
            raise

    async def _complete_in(
        self,
        ctx: CallContext,
        room: Room,
        hold: _Hold | None,
        index: int,
        before: str | None,
        mode: str,
        unit: str,
        max_tokens: int,
        started: float,
        emit: Emit | None,
    ) -> dict[str, Any]:
        text = str(room.text)
        index = _locate(text, index, unit, before)
        owner: Owner = (self._owner(ctx), room.key)
        user = ctx.identity.user
        cap = self.config.completion_per_user
        if cap > 0 and sum(r.user == user for o, r in self._active.items() if o != owner) >= cap:
            raise ProtocolError(
                ErrorCode.RATE_LIMITED, f"at most {cap} completion requests of a user at once"
            )
        self._supersede(owner, "superseded by a newer request", "superseded")
        request = self._active[owner] = _Request(user)
        self._hook_close(ctx)
        # the text itself, not the state vector: a deletion leaves the state vector as it was
        digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        key: _CacheKey = (room.key, digest, index, mode, max_tokens)
        anchor = self.anchors.add(room, utf8_offset(text, index))
        end = self.anchors.add(room, anchor.offset, after=True)
        try:
            output, cached, queue_ms, prompt_ms = await self._answer(
                ctx, owner, room, text, index, key, request, mode, max_tokens, emit
            )
        except BaseException:
            self.anchors.remove(anchor)
            self.anchors.remove(end)
            raise
        finally:
            if self._active.get(owner) is request:
                del self._active[owner]
        answer = output.text[: self.max_chars]
        position = anchor.codepoint()
        if not answer:  # nothing to insert: the offer needs no anchor, nor the room
            self.anchors.remove(anchor)
            self.anchors.remove(end)
            if hold is not None:
                hold.release(self._releasing)
            hold = None
        offer = _Offer(
            secrets.token_urlsafe(12),
            ctx.identity.user,
            owner,
            anchor if answer else None,
            answer,
            room.key,
            position,
            hold,
            unit,
            end=end if answer else None,
        )
        self._offers[offer.id] = offer
        self._by_owner[owner] = offer
        if hold is not None:
            self._bound_held(offer.user)
        latency = {
            "queue_ms": round(queue_ms, 3),
            "prompt_ms": round(prompt_ms, 3),
            "model_ms": round(0.0 if cached else output.model_ms, 3),
            "total_ms": round((time.perf_counter() - started) * 1000, 3),
        }
        self.metrics.answered(latency, shown=bool(answer))
        if cached:
            self.metrics.count("cached")
        else:
            self.metrics.count("prompt_tokens", output.prompt_tokens)
            self.metrics.count("reused_tokens", output.reused_tokens)
        if unit == "utf16":
            position = codepoint_to_utf16(str(room.text), position)
            offer.index = position
        return {
            "id": offer.id,
            "doc": room.key,
            "text": answer,
            "index": position,
            "model": output.model,
            "cached": cached,
            "latency": latency,
            "prompt_tokens": 0 if cached else output.prompt_tokens,
            "reused_tokens": 0 if cached else output.reused_tokens,
        }

    async def _answer(
        self,
        ctx: CallContext,
        owner: Owner,
        room: Room,
        text: str,
        index: int,
        key: _CacheKey,
        request: _Request,
        mode: str,
        max_tokens: int,
        emit: Emit | None,
    ) -> tuple[JobOutput, bool, float, float]:
        """The completion (from the cache or a worker), and the server's queue and prompt ms."""
        hit = self._cache.get(key)
        if hit is not None and time.monotonic() - hit[0] < CACHE_TTL:
            self._cache.move_to_end(key)
            if emit is not None and hit[1].text:
                emit(hit[1].text[: self.max_chars])
            return hit[1], True, 0.0, 0.0
        building = time.perf_counter()
        parts = await self.context.gather(room, text, index, ctx.connection, owner[0])
        prompt_ms = (time.perf_counter() - building) * 1000
        if request.superseded:
            raise ProtocolError(ErrorCode.CANCELLED, "superseded by a newer request")
        spec = JobSpec(
            secrets.token_hex(8),
            parts,
            max_tokens,
            mode == "line",
            cache_key=_cache_key(owner),
            stream=emit is not None,
        )
        job = request.job = QueuedJob(spec, asyncio.get_running_loop().create_future())
        if emit is not None:
            sink = emit

            def forward(piece: str) -> None:
                if not request.superseded:
                    sink(piece)

            job.on_text = forward
        self.pool.submit(job)
        try:
            output = await asyncio.wait_for(asyncio.shield(job.future), self.timeout)
        except TimeoutError:
            self.pool.cancel(job, ErrorCode.TIMEOUT, "timed out")
            raise ProtocolError(
                ErrorCode.TIMEOUT, f"no completion within {self.timeout:g} s"
            ) from None
        except asyncio.CancelledError:  # the HTTP requester disconnected (or the server stops)
            self.pool.cancel(job, ErrorCode.CANCELLED, "the requester left")
            if not request.superseded:  # else already counted (a /ws disconnect, say)
                self.metrics.count("disconnected")
            raise
        if request.superseded:
            raise ProtocolError(ErrorCode.CANCELLED, "superseded by a newer request")
        self._cache[key] = (time.monotonic(), output)
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        queue_ms = ((job.sent_at or job.queued_at) - job.queued_at) * 1000 + output.queue_ms
        return output, False, queue_ms, prompt_ms + output.prompt_ms

    # -- accept and cancel -------------------------------------------------------------------

    async def accept(self, ctx: CallContext, args: dict[str, Any]) -> dict[str, Any]:
        """``complete.accept(id, length?)``: insert the completion (or its first ``length``
        code points) where it was asked for, as an edit by the AI on the caller's behalf.
        The answer's ``index`` counts in the request's ``unit``. DOCUMENT_FULL when the text
        would take the document past its size cap (the offer stays: a shorter ``length``
        may fit)."""
        offer = self._offers.get(arg_str(args, "id"))
        if offer is None or offer.user != ctx.identity.user:
            raise ProtocolError(
                ErrorCode.NOT_FOUND, "no such completion (expired, superseded or accepted)"
            )
        if offer.anchor is None:  # an empty completion: accepting it inserts nothing
            self._drop_offer(offer)
            return {"doc": offer.doc, "index": offer.index, "text": ""}
        room = offer.anchor.room
        if not ctx.identity.can_write_branch(room.doc_id.repo, room.doc_id.branch):
            raise ProtocolError(ErrorCode.READ_ONLY, "read-only: completions cannot be accepted")
        length = arg_int(args, "length", len(offer.text))
        if not 0 < length <= len(offer.text):
            raise ProtocolError(ErrorCode.MALFORMED, "length outside the completion")
        if self.rooms.get_key(room.key) is not room or room.failed:
            self._drop_offer(offer)
            raise ProtocolError(ErrorCode.NOT_FOUND, "the document was closed; ask again")
        if offer.anchor.cut:  # what the completion goes on from was deleted since
            self._drop_offer(offer)
            raise ProtocolError(
                ErrorCode.CONFLICT, "the text before the completion was deleted; ask again"
            )
        current = str(room.text)
        # Text typed where the completion goes since it was asked for that begins it was
        # typed through it: the rest goes after it (before it, the completion would double
        # it); typed whole, and more, nothing is inserted. Other text typed there stays
        # after the completion, as the anchor keeps it.
        offset, typed = offer.anchor.offset, ""
        if offer.end is not None and offer.end.offset > offset:
            there = current.encode("utf-8")[offset : offer.end.offset].decode("utf-8", "replace")
            if offer.text.startswith(there) or there.startswith(offer.text):
                offset, typed = offer.end.offset, there[: len(offer.text)]
        text = offer.text[len(typed) : max(length, len(typed))]
        if room.max_document:
            size = len(current.encode("utf-8")) + len(text.encode("utf-8"))
            if size > room.max_document:
                raise ProtocolError(
                    ErrorCode.DOCUMENT_FULL,
                    f"the document would grow past its cap of {room.max_document} bytes",
                )
        position = byte_to_codepoint(current, offset)
        if offer.unit == "utf16":
            position = codepoint_to_utf16(current, position)
        self._drop_offer(offer)
        if not text:  # typed in whole already
            return {"doc": room.key, "index": position, "text": ""}
        done = room.edit(lambda t: t.insert(offset, text), origin=Origin.AI, author=ctx.identity)
        await done
        self.metrics.count("accepted")
        self.metrics.count("accepted_chars", len(text))
        return {"doc": room.key, "index": position, "text": text}

    async def cancel(self, ctx: CallContext, args: dict[str, Any]) -> dict[str, Any]:
        """``complete.cancel(doc)``: drop this connection's request or offer for ``doc``."""
        doc_id = DocId.parse(arg_str(args, "doc"))
        owner: Owner = (self._owner(ctx), str(doc_id))
        return {"cancelled": self._supersede(owner, "cancelled by the requester", "cancelled")}

    async def metrics_op(self, ctx: CallContext, args: dict[str, Any]) -> dict[str, Any]:
        return self.snapshot()

    def snapshot(self) -> dict[str, Any]:
        figures = self.metrics.snapshot()
        figures["workers"] = [
            {"name": w.name, "capacity": w.capacity, "running": len(w.running)}
            for w in self.pool.workers
        ]
        figures["queued"] = len(self.pool.pending)
        figures["offers"] = len(self._offers)
        return figures

    # -- helpers -----------------------------------------------------------------------------

    async def _room(self, ctx: CallContext, doc: str) -> tuple[Room, _Hold | None]:
        """The live room of ``doc``. On ``/ws`` the connection must have it open; over HTTP
        the server opens it (a :class:`_Hold`, to release once the request is done with it)."""
        doc_id = DocId.parse(doc)
        if not ctx.identity.can_read(doc_id.repo):
            raise ProtocolError(ErrorCode.FORBIDDEN, f"no access to repository {doc_id.repo!r}")
        if ctx.connection is None:
            hold = _Hold(self.rooms, doc_id)
            return await hold.enter(), hold
        room = self.rooms.get_key(str(doc_id))
        if room is None or room.failed or room not in open_rooms(ctx.connection):
            raise ProtocolError(
                ErrorCode.UNKNOWN_DOCUMENT, "open the document before asking for completions"
            )
        return room, None

    @staticmethod
    def _owner(ctx: CallContext) -> object:
        if ctx.connection is not None:
            return id(ctx.connection)
        return ("http", ctx.identity.user)

    def _supersede(self, owner: Owner, reason: str, metric: str) -> bool:
        """Cancel ``owner``'s request in flight and drop its offer; whether there was one."""
        found = False
        request = self._active.pop(owner, None)
        if request is not None:
            found = True
            request.superseded = True
            if request.job is not None:
                self.pool.cancel(request.job, ErrorCode.CANCELLED, reason)
            self.metrics.count(metric)
        offer = self._by_owner.get(owner)
        if offer is not None:
            found = True
            self._drop_offer(offer)
        return found

    def _bound_held(self, user: str) -> None:
        """Drop ``user``'s oldest offers that hold a document loaded, past
        :data:`HELD_OFFERS` of them: one person asking about hundreds of documents over
        HTTP would keep them all in memory for the offers' lifetime."""
        held = [offer for offer in self._offers.values() if offer.user == user and offer.hold]
        for offer in held[: max(0, len(held) - HELD_OFFERS)]:  # (oldest first)
            self._drop_offer(offer)

    def _drop_offer(self, offer: _Offer) -> None:
        self._offers.pop(offer.id, None)
        if self._by_owner.get(offer.owner) is offer:
            del self._by_owner[offer.owner]
        if offer.anchor is not None:
            self.anchors.remove(offer.anchor)
        if offer.end is not None:
            self.anchors.remove(offer.end)
        if offer.hold is not None:
            offer.hold.release(self._releasing)

    def _hook_close(self, ctx: CallContext) -> None:
        connection = ctx.connection
        if connection is None or id(connection) in self._hooked:
            return
        key = id(connection)
        self._hooked.add(key)

        def closed() -> None:
            self._hooked.discard(key)
            for owner in [o for o in (*self._active, *self._by_owner) if o[0] == key]:
                with contextlib.suppress(Exception):
                    self._supersede(owner, "the requester left", "disconnected")

        ctx.on_close.append(closed)


def _cache_key(owner: Owner) -> str:
    """The key under which workers keep this typist's prompt cache (no identity in it)."""
    return hashlib.blake2b(repr(owner).encode(), digest_size=12).hexdigest()


def _stream_events(ctx: CallContext, args: dict[str, Any]) -> Emit | None:
    """For ``stream``: a sender of ``complete.stream`` events on the caller's connection."""
    token = args.get("stream")
    if token is None:
        return None
    if isinstance(token, bool) or not isinstance(token, (int, str)) or len(str(token)) > 64:
        raise ProtocolError(ErrorCode.MALFORMED, "stream must be a number or a short string")
    send, doc = ctx.send_event, args.get("doc")
    if send is None:
        raise ProtocolError(ErrorCode.MALFORMED, "stream: use /ws or POST /api/complete/stream")
    return lambda piece: send(STREAM_TOPIC, {"stream": token, "doc": doc, "text": piece})


COMPLETE_ARGS = ("doc", "index", "mode", "unit", "max_tokens", "before", "stream")
"""The arguments ``complete`` takes (any other is refused: see ``Operations``)."""

BEFORE_CHARS = 64  # the most text before the cursor a request may carry (``before``)
BEFORE_WINDOW = 512  # code points either side of ``index`` searched for ``before``


def _before(args: dict[str, Any]) -> str | None:
    """``before``: the text just before the cursor as the client sees it, if given."""
    if args.get("before") is None:
        return None
    before = arg_str(args, "before")
    if len(before) > BEFORE_CHARS:
        raise ProtocolError(ErrorCode.MALFORMED, f"before: at most {BEFORE_CHARS} characters")
    # a client counting UTF-16 units may have cut a surrogate pair at the start
    return before[1:] if before and 0xDC00 <= ord(before[0]) <= 0xDFFF else before


def _locate(text: str, index: int, unit: str, before: str | None) -> int:
    """The code point index in ``text`` the request means: ``index`` (in ``unit``) checked
    against the document, and, with ``before``, moved to the nearest place within
    ``BEFORE_WINDOW`` where the text before it ends with ``before`` (an edit the client had
    not seen yet may have moved its cursor); CONFLICT when there is none."""
    if unit == "utf16":
        if not 0 <= index <= codepoint_to_utf16(text, len(text)):
            raise ProtocolError(ErrorCode.MALFORMED, f"index {index} outside the document")
        index = utf16_to_codepoint(text, index)
    if not 0 <= index <= len(text):
        raise ProtocolError(ErrorCode.MALFORMED, f"index {index} outside the document")
    if not before or text.endswith(before, 0, index):
        return index
    low = max(0, index - BEFORE_WINDOW - len(before))
    high = min(len(text), index + BEFORE_WINDOW)
    best: int | None = None
    found = text.find(before, low, high)
    while found >= 0:
        end = found + len(before)
        if best is None or abs(end - index) < abs(best - index):
            best = end
        found = text.find(before, found + 1, high)
    if best is None or abs(best - index) > BEFORE_WINDOW:
        raise ProtocolError(ErrorCode.CONFLICT, "the document changed around the cursor; ask again")
    return best


def _unit(args: dict[str, Any]) -> str:
    unit = arg_str(args, "unit", "codepoint")
    if unit not in ("codepoint", "utf16"):
        raise ProtocolError(ErrorCode.MALFORMED, "unit must be 'codepoint' or 'utf16'")
    return unit
