"""``/yjs/<repo>/<branch>:<path>``: exactly what a stock y-websocket provider speaks."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web

from protocol.errors import ErrorCode, ProtocolError
from protocol.names import DocId
from protocol.yjs import (
    AuthDenied,
    AwarenessMessage,
    QueryAwareness,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
    YjsLimits,
    decode_message,
    encode_awareness,
    encode_message,
)

from ..live.outbox import Outbox, close_ws
from ..live.quotas import UserQuotas
from ..live.room import EMPTY_UPDATE, Room
from ..live.rooms import Rooms
from ..live.traffic import Traffic, read_failed
from .auth import Authenticator, Identity, end_at_expiry
from .config import ServerConfig
from .refusals import Refusals
from .sockets import WebSockets
from .turns import Turns

__all__ = ["YjsEndpoint", "handle_yjs"]

log = logging.getLogger("collab.yjs")


@dataclass(frozen=True, slots=True)
class YjsEndpoint:
    """The parts ``/yjs/...`` serves with, given by the composition root."""

    config: ServerConfig
    auth: Authenticator
    rooms: Rooms
    quotas: UserQuotas
    sockets: WebSockets
    traffic: Traffic
    limits: YjsLimits
    refusals: Refusals = field(default_factory=Refusals)

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        return await handle_yjs(self, request)


KEEPALIVE = encode_message(AwarenessMessage(encode_awareness([])))
"""An awareness message of no entries: stock clients take it, and it changes nothing."""


class KeepAlive:
    """Puts :data:`KEEPALIVE` in a peer's queue every ``interval`` seconds, from one timer
    (no task). A stock y-websocket client closes its connection once it has received no
    message for 30 s, WebSocket pings not counting; the reference server keeps it by sending
    each client its own awareness back, which this server does not (another person's
    awareness, every 15 s, keeps everyone but a person alone in a document)."""

    def __init__(self, outbox: Outbox, interval: float) -> None:
        self.outbox = outbox
        self.interval = interval
        self._timer: asyncio.TimerHandle | None = None
        if interval > 0:
            self._timer = asyncio.get_running_loop().call_later(interval, self._send)

    def _send(self) -> None:
        if self.outbox.closing:
            return
        self.outbox.put(KEEPALIVE)
        self._timer = asyncio.get_running_loop().call_later(self.interval, self._send)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


def _encode_update(update: bytes) -> bytes:
    return encode_message(SyncUpdate(update))


def _encode_awareness(payload: bytes) -> bytes:
    return encode_message(AwarenessMessage(payload))


class YjsPeer:
    """One stock Yjs client on one document."""

    def __init__(self, outbox: Outbox, identity: Identity, writable: bool) -> None:
        self.outbox = outbox
        self.identity = identity
        self.writable = writable
        self.last_write: asyncio.Future[None] | None = None

    def send_updates(self, updates: list[bytes]) -> None:
        self.outbox.put_updates(updates, _encode_update)

    def send_awareness(self, payload: bytes) -> None:
        self.outbox.put_encoded(payload, _encode_awareness)

    def abort(self, code: ErrorCode, reason: str) -> None:
        self.outbox.abort(code, reason)


async def handle_yjs(endpoint: YjsEndpoint, request: web.Request) -> web.WebSocketResponse:
    ws = endpoint.sockets.websocket()
    await ws.prepare(request)
    name = f"yjs {request.remote} {request.match_info['room'][:200]}"
    try:
        doc_id = DocId.parse(request.match_info["room"])
        identity = endpoint.auth.authenticate(
            token=request.query.get("token"), user=request.query.get("user"), remote=request.remote
        )
        if not identity.can_read(doc_id.repo):
            raise ProtocolError(ErrorCode.FORBIDDEN, f"no access to repository {doc_id.repo!r}")
        endpoint.sockets.admit(identity.user)
    except ProtocolError as exc:
        await _refuse(endpoint, ws, request, name, exc)
        return ws
    outbox = Outbox(
        ws,
        limit=endpoint.config.outbox_limit,
        max_bytes=endpoint.config.outbox_bytes,
        budget=endpoint.sockets.budget(identity.user),
        name=f"{name} ({identity.user})",
        traffic=endpoint.traffic,
    )
    peer = YjsPeer(outbox, identity, identity.can_write_branch(doc_id.repo, doc_id.branch))
    try:
        room = await endpoint.rooms.acquire(doc_id, peer)
    except BaseException as exc:  # refused, failed or cancelled: the connection is not counted
        endpoint.sockets.release(identity.user)
        if isinstance(exc, Exception) and not isinstance(exc, ProtocolError):
            log.exception("%s: opening the document failed", name)
            exc = ProtocolError(ErrorCode.INTERNAL, "opening the document failed (see the log)")
        elif not isinstance(exc, ProtocolError):
            raise
        await _refuse(endpoint, ws, request, name, exc)
        return ws
    writer = asyncio.create_task(outbox.run())
    keepalive = KeepAlive(outbox, endpoint.config.yjs_keepalive)
    expiry = end_at_expiry(identity, outbox.abort)
    endpoint.sockets.track(ws, identity.user)
    access = "read-write" if peer.writable else "read-only"
    log.info("%s (%s): connected, %s", name, identity.user, access)
    try:
        if peer.writable:  # ask for what the client has; read-only clients have nothing to give
            outbox.put(encode_message(SyncStep1(room.state_vector())))
        turns = Turns()
        async for msg in ws:
            if msg.type is WSMsgType.BINARY:
                outbox.traffic.bytes_in += len(msg.data)
                started = time.perf_counter()
                try:
                    _receive(room, peer, msg.data, endpoint)
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
                read_failed(outbox.traffic, log, name, msg.data)
    finally:
        keepalive.cancel()
        if expiry is not None:
            expiry.cancel()
        endpoint.sockets.untrack(ws)
        room.detach(peer)
        outbox.finish()
        await asyncio.gather(writer, return_exceptions=True)
        code = outbox.close_code or ws.close_code
        log.info("%s (%s): disconnected (code %s)", name, identity.user, code)
    return ws


async def _refuse(
    endpoint: YjsEndpoint,
    ws: web.WebSocketResponse,
    request: web.Request,
    name: str,
    exc: ProtocolError,
) -> None:
    """Close ``ws`` with ``exc``'s code, after a wait if the same client was refused the same
    way just before (see :mod:`collab.server.refusals`)."""
    refusal = endpoint.refusals.note(request.remote, request.match_info["room"], exc.code)
    if refusal.logged:
        again = f" ({refusal.count} times in a row)" if refusal.count > 1 else ""
        log.warning("%s: refused%s: %s", name, again, exc)
    endpoint.traffic.refuse("close", exc.code)
    await endpoint.refusals.wait(refusal)
    await close_ws(ws, exc.code, exc.message)


def _receive(room: Room, peer: YjsPeer, data: bytes, endpoint: YjsEndpoint) -> None:
    message = decode_message(data, endpoint.limits)
    match message:
        case SyncStep1(state_vector=sv):
            answer = room.handshake(peer, sv)
            endpoint.quotas.charge_answer(peer.identity.user, len(answer))
            _answer(peer, encode_message(SyncStep2(answer)))
        case SyncStep2(update=update) | SyncUpdate(update=update):
            if not peer.writable:
                if update != EMPTY_UPDATE:
                    log.warning(
                        "%s: refused a write from read-only %s", room.key, peer.identity.user
                    )
                    peer.outbox.traffic.refuse("error", ErrorCode.READ_ONLY)
                    peer.outbox.put(encode_message(AuthDenied("read-only: writes are refused")))
                return
            endpoint.quotas.charge(peer.identity.user, len(update))
            peer.last_write = room.receive_update(
                update, sender=peer, answer=isinstance(message, SyncStep2)
            )
            peer.outbox.traffic.updates_in += 1
        case AwarenessMessage(payload=payload):
            endpoint.quotas.charge_awareness(peer.identity.user, len(payload))
            room.receive_awareness(peer, payload)
        case QueryAwareness():
            states = room.awareness_entries()
            if states:
                table = encode_awareness(states)
                endpoint.quotas.charge_awareness(peer.identity.user, len(table))
                peer.send_awareness(table)
        case AuthDenied():
            pass


def _answer(peer: YjsPeer, step2: bytes) -> None:
    """Send the answer to a sync step 1 once the updates the peer sent before it are durable:
    an editor may take the answer for the server's word that it has them, and drop its copy
    (the web editor does, for a document it leaves). An update that failed is no such word:
    the connection is closed for it, unanswered."""
    pending = peer.last_write
    if pending is None or pending.done():
        _send_if_written(peer, step2, pending)
    else:
        pending.add_done_callback(lambda done: _send_if_written(peer, step2, done))


def _send_if_written(peer: YjsPeer, frame: bytes, write: asyncio.Future[None] | None) -> None:
    if write is None or (not write.cancelled() and write.exception() is None):
        peer.outbox.put(frame)
