"""``/ws``: the engine's own msgpack protocol, many documents over one socket."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web

from protocol import messages as m
from protocol.errors import ErrorCode, ProtocolError
from protocol.names import DocId

from ..live.outbox import Outbox, close_ws
from ..live.quotas import UserQuotas
from ..live.room import EMPTY_UPDATE, Room
from ..live.rooms import Rooms
from ..live.traffic import Traffic, read_failed
from .auth import Authenticator, Identity, dev_mode_refusal, end_at_expiry, is_loopback
from .config import ServerConfig
from .ops import CallContext, Operations
from .sockets import WebSockets
from .turns import Turns

__all__ = ["WsEndpoint", "handle_ws"]

log = logging.getLogger("collab.ws")
# close the handle, not the socket
_DOCUMENT_ERRORS = (ErrorCode.RELOAD, ErrorCode.DOCUMENT_FULL, ErrorCode.NOT_TEXT)
_PRUNE_AT = 1024  # writes kept for the next pong before the durable ones are let go


@dataclass(frozen=True, slots=True)
class WsEndpoint:
    """The parts ``/ws`` serves with, given by the composition root."""

    config: ServerConfig
    auth: Authenticator
    rooms: Rooms
    quotas: UserQuotas
    ops: Operations
    sockets: WebSockets
    traffic: Traffic
    limits: m.Limits

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        return await handle_ws(self, request)


class DocPeer:
    """One open document handle on a ``/ws`` connection."""

    def __init__(self, session: Session, ref: int, room: Room | None, writable: bool) -> None:
        self.session = session
        self.identity = session.identity
        self.ref = ref
        self.room = room
        self.writable = writable
        self._encoder = self._encode_update  # one bound method, so queued updates can merge

    def send_updates(self, updates: list[bytes]) -> None:
        self.session.outbox.put_updates(updates, self._encoder)

    def _encode_update(self, update: bytes) -> bytes:
        return m.encode(m.Sync(self.ref, m.SyncStep.UPDATE, update))

    def send_awareness(self, payload: bytes) -> None:
        self.session.send(m.Awareness(self.ref, payload))

    def abort(self, code: ErrorCode, reason: str) -> None:
        if code in _DOCUMENT_ERRORS:  # this document only; the connection's others go on
            self.session._drop(self.ref, ProtocolError(code, reason))
        else:
            self.session.outbox.abort(code, reason)


class Session:
    """An authenticated ``/ws`` connection and its open documents."""

    def __init__(self, endpoint: WsEndpoint, outbox: Outbox, identity: Identity) -> None:
        self.endpoint = endpoint
        self.outbox = outbox
        self.identity = identity
        self.docs: dict[int, DocPeer] = {}
        self.writes: list[asyncio.Future[None]] = []  # not yet acknowledged by a pong
        self._prune_at = _PRUNE_AT
        self.tasks: set[asyncio.Task[None]] = set()
        self.calls = CallContext(identity, connection=self, send_event=self._event)

    def _event(self, topic: str, data: dict[str, Any]) -> None:
        self.send(m.Event(topic, data))

    def send(self, message: m.Message) -> None:
        self.outbox.put(m.encode(message))

    def error(self, code: ErrorCode, message: str, ref: int | None = None) -> None:
        self.outbox.traffic.refuse("error", code)
        self.send(m.Error(code, message, ref))

    async def receive(self, message: m.Message) -> None:
        match message:
            case m.Open(ref=ref, doc=doc):
                await self._open(ref, doc)
            case m.Close(ref=ref):
                peer = self.docs.pop(ref, None)
                if peer is not None and peer.room is not None:
                    peer.room.detach(peer)
                self.send(m.Close(ref))
            case m.Sync(ref=ref, step=step, data=data):
                self._sync(ref, step, data)
            case m.Awareness(ref=ref, data=data):
                peer = self._doc(ref)
                if peer is not None and peer.room is not None:
                    self.endpoint.quotas.charge_awareness(self.identity.user, len(data))
                    peer.room.receive_awareness(peer, data)
            case m.Ping(id=ping_id):
                self._spawn(self._pong(ping_id))
            case m.Call(id=call_id, op=op, args=args):
                if len(self.tasks) >= self.endpoint.config.max_calls:
                    self.outbox.traffic.refuse("error", ErrorCode.RATE_LIMITED)
                    self.send(m.Result(call_id, None, ErrorCode.RATE_LIMITED, "too many calls"))
                else:
                    self._spawn(self._call(call_id, op, args))
            case m.Hello():
                self.error(ErrorCode.MALFORMED, "hello was already received")
            case _:
                raise ProtocolError(ErrorCode.MALFORMED, f"{type(message).__name__} is server-only")

    def _doc(self, ref: int) -> DocPeer | None:
        peer = self.docs.get(ref)
        if peer is None:
            self.error(ErrorCode.UNKNOWN_DOCUMENT, f"no open document with ref {ref}", ref)
        return peer

    async def _open(self, ref: int, text: str) -> None:
        if ref in self.docs:
            self.error(ErrorCode.ALREADY_OPEN, f"ref {ref} is already open", ref)
            return
        if len(self.docs) >= self.endpoint.config.max_open_docs:
            self.error(ErrorCode.TOO_LARGE, "too many open documents on this connection", ref)
            return
        try:
            doc_id = DocId.parse(text)
            if not self.identity.can_read(doc_id.repo):
                raise ProtocolError(ErrorCode.FORBIDDEN, f"no access to repository {doc_id.repo!r}")
        except ProtocolError as exc:
            self.error(exc.code, exc.message, ref)
            return
        writable = self.identity.can_write_branch(doc_id.repo, doc_id.branch)
        peer = DocPeer(self, ref, None, writable)
        self.docs[ref] = peer  # reserve the ref while loading
        try:
            room = await self.endpoint.rooms.acquire(doc_id, peer)
        except ProtocolError as exc:
            self.docs.pop(ref, None)
            self.error(exc.code, exc.message, ref)
            return
        except Exception:  # this document only: the connection's others go on
            self.docs.pop(ref, None)
            log.exception("%s: opening %s failed", self.identity.user, doc_id)
            self.error(ErrorCode.INTERNAL, f"opening {doc_id} failed (see the server's log)", ref)
            return
        if self.docs.get(ref) is not peer:  # closed while loading
            room.detach(peer)
            return
        peer.room = room
        self.send(m.Opened(ref, str(doc_id), peer.writable))
        if peer.writable:  # ask for what the client has; a read-only handle has nothing to give
            self.send(m.Sync(ref, m.SyncStep.STEP1, room.state_vector()))

    def _sync(self, ref: int, step: m.SyncStep, data: bytes) -> None:
        peer = self._doc(ref)
        if peer is None or peer.room is None:
            return
        room = peer.room
        try:
            if step is m.SyncStep.STEP1:
                answer = room.handshake(peer, data)
                self.endpoint.quotas.charge_answer(self.identity.user, len(answer))
                self.send(m.Sync(ref, m.SyncStep.STEP2, answer))
                return
            if not peer.writable:
                if data != EMPTY_UPDATE:
                    log.warning(
                        "%s: refused a write from read-only %s", room.key, self.identity.user
                    )
                    self.error(ErrorCode.READ_ONLY, "read-only: writes are refused", ref)
                return
            self.endpoint.quotas.charge(self.identity.user, len(data))
            write = room.receive_update(data, sender=peer, answer=step is m.SyncStep.STEP2)
        except ProtocolError as exc:
            if exc.code not in _DOCUMENT_ERRORS:
                raise
            self._drop(ref, exc)  # this document only; the connection's others go on
            return
        self.outbox.traffic.updates_in += 1
        self.writes.append(write)
        if len(self.writes) >= self._prune_at:  # a client that never pings: keep it bounded
            self.writes = [write for write in self.writes if not write.done()]
            self._prune_at = max(_PRUNE_AT, 2 * len(self.writes))

    def _drop(self, ref: int, exc: ProtocolError) -> None:
        """Close the handle ``ref`` from the server's side, telling the client why."""
        peer = self.docs.pop(ref, None)
        if peer is not None and peer.room is not None:
            peer.room.detach(peer)
        self.error(exc.code, exc.message, ref)
        self.send(m.Close(ref))

    async def _pong(self, ping_id: int) -> None:
        writes, self.writes = self.writes, []
        if writes:
            await asyncio.gather(*writes, return_exceptions=True)
        self.send(m.Pong(ping_id))

    async def _call(self, call_id: int, op: str, args: dict[str, Any]) -> None:
        """Run one call and answer it, whatever happens: an answer that cannot be encoded
        is answered with an ``INTERNAL`` error instead."""
        try:
            value = await self.endpoint.ops.call(self.calls, op, args)
        except ProtocolError as exc:
            self._refuse_call(call_id, exc.code, exc.message)
            return
        try:
            encoded = m.encode(m.Result(call_id, value))
        except Exception as exc:
            log.exception("the result of %s cannot be encoded", op)
            self._refuse_call(call_id, ErrorCode.INTERNAL, f"{op} failed: {exc}")
            return
        self.outbox.put(encoded)

    def _refuse_call(self, call_id: int, code: ErrorCode, message: str) -> None:
        self.outbox.traffic.refuse("error", code)
        # valid Unicode whatever the message holds (a name git holds that is not UTF-8)
        shown = message.encode("utf-8", "backslashreplace").decode("utf-8")
        self.send(m.Result(call_id, None, code, shown))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for callback in self.calls.on_close:
            try:
                callback()
            except Exception:
                log.exception("close callback failed")
        self.calls.on_close.clear()
        for peer in self.docs.values():
            if peer.room is not None:
                peer.room.detach(peer)
        self.docs.clear()


async def _hello(endpoint: WsEndpoint, ws: web.WebSocketResponse, remote: str | None) -> Identity:
    try:
        msg = await ws.receive(timeout=endpoint.config.hello_timeout)
    except TimeoutError:
        raise ProtocolError(ErrorCode.UNAUTHORIZED, "no hello received in time") from None
    if msg.type is not WSMsgType.BINARY:
        raise ProtocolError(ErrorCode.MALFORMED, "expected a binary hello message")
    hello = m.decode_hello(msg.data, endpoint.limits)
    if hello.version != m.PROTOCOL_VERSION:
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"protocol version {hello.version} unsupported; server speaks {m.PROTOCOL_VERSION}",
        )
    if endpoint.auth.dev_mode and not hello.user and is_loopback(remote):
        raise dev_mode_refusal(
            "Client(url, user=NAME) in Python (hello.user on the wire)", token=bool(hello.token)
        )
    return endpoint.auth.authenticate(token=hello.token, user=hello.user, remote=remote)


async def handle_ws(endpoint: WsEndpoint, request: web.Request) -> web.WebSocketResponse:
    ws = endpoint.sockets.websocket()
    await ws.prepare(request)
    name = f"ws {request.remote}"
    try:
        identity = await _hello(endpoint, ws, request.remote)
        endpoint.sockets.admit(identity.user)
    except ProtocolError as exc:
        log.warning("%s: refused: %s", name, exc)
        endpoint.traffic.refuse("close", exc.code)
        await close_ws(ws, exc.code, exc.message)
        return ws
    traffic = endpoint.traffic
    outbox = Outbox(
        ws,
        limit=endpoint.config.outbox_limit,
        max_bytes=endpoint.config.outbox_bytes,
        budget=endpoint.sockets.budget(identity.user),
        name=f"{name} ({identity.user})",
        traffic=traffic,
    )
    session = Session(endpoint, outbox, identity)
    writer = asyncio.create_task(outbox.run())
    expiry = end_at_expiry(identity, outbox.abort)
    endpoint.sockets.track(ws, identity.user)
    session.send(m.Welcome(m.PROTOCOL_VERSION, identity.user, secrets.token_hex(8)))
    log.info("%s (%s): connected", name, identity.user)
    try:
        turns = Turns()
        async for msg in ws:
            if msg.type is WSMsgType.BINARY:
                traffic.bytes_in += len(msg.data)
                started = time.perf_counter()
                try:
                    await session.receive(m.decode(msg.data, endpoint.limits))
                except ProtocolError as exc:
                    outbox.abort(exc.code, exc.message)
                if outbox.closing:  # nothing more from a peer being closed is applied
                    break
                if turns.due(started):  # the other connections' frames come in between
                    await asyncio.sleep(0)
            elif msg.type is WSMsgType.TEXT:
                outbox.abort(ErrorCode.MALFORMED, "text frames are not part of the protocol")
            elif msg.type is WSMsgType.ERROR:
                # aiohttp has closed the socket already (an oversized message: 4009, see
                # CollabWebSocket); the frame error is the message's data, not ws.exception()
                read_failed(traffic, log, name, msg.data)
    finally:
        opened = len(session.docs)
        if expiry is not None:
            expiry.cancel()
        endpoint.sockets.untrack(ws)
        session.close()
        outbox.finish()
        await asyncio.gather(writer, return_exceptions=True)
        log.info(
            "%s (%s): disconnected (code %s, %d document%s open)",
            name,
            identity.user,
            outbox.close_code or ws.close_code,
            opened,
            "" if opened == 1 else "s",
        )
    return ws
