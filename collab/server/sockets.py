"""The server's open WebSockets: made with the configured limits, tracked, closed together.

Every endpoint that upgrades a request (``/ws``, ``/yjs``, ``/worker``) takes its WebSocket
from :class:`Sockets` and tracks it while it is open, so that the server can count them and
close them all when it stops. ``/ws`` and ``/yjs`` also count each user's: past
``max_per_user`` open at once, a user's next one is refused (4029).
"""

from __future__ import annotations

import asyncio
import weakref
from collections import Counter
from typing import Protocol

from aiohttp import web

from protocol.errors import ErrorCode, ProtocolError

from ..live.outbox import SendBudget, close_ws
from .websocket import CollabWebSocket

__all__ = ["Sockets", "WebSockets"]


class Sockets:
    """The WebSocket factory and registry of one server."""

    def __init__(
        self,
        *,
        max_message: int,
        heartbeat: float,
        linger: float,
        max_per_user: int = 0,
        user_send_bytes: int = 0,
    ) -> None:
        self.max_message = max_message
        self.heartbeat = heartbeat
        self.linger = linger
        self.max_per_user = max_per_user  # 0: no limit
        self.user_send_bytes = user_send_bytes  # 0: no cap
        self._per_user: Counter[str] = Counter()  # connections admitted and not yet gone
        self._budgets: dict[str, SendBudget] = {}  # of the users with connections admitted
        self._user_of: dict[web.WebSocketResponse, str] = {}
        self._open: weakref.WeakSet[web.WebSocketResponse] = weakref.WeakSet()
        self._lingering: set[asyncio.Task[None]] = set()  # closes of refused WebSockets

    def websocket(self) -> web.WebSocketResponse:
        return CollabWebSocket(
            max_message=self.max_message,
            heartbeat=self.heartbeat,
            autoping=True,
            # Yjs updates are small and already compact; per-message deflate costs both ends
            # more CPU than it saves (and stock y-websocket servers do not offer it).
            compress=False,
            # after refusing an oversized message, what the peer still sends is discarded this
            # long at most, so that it reads the close frame instead of a reset
            linger=self.linger,
            lingering=self._lingering,
        )

    def admit(self, user: str) -> None:
        """Count one more connection of ``user`` (given back by :meth:`release`, or by
        :meth:`untrack` of the WebSocket tracked for it); raise ``RATE_LIMITED`` if it
        already has ``max_per_user``."""
        if self.max_per_user and self._per_user[user] >= self.max_per_user:
            raise ProtocolError(
                ErrorCode.RATE_LIMITED,
                f"more than {self.max_per_user} connections open for user {user!r}",
            )
        self._per_user[user] += 1

    def budget(self, user: str) -> SendBudget:
        """The send budget ``user``'s admitted connections share (see ``SendBudget``)."""
        budget = self._budgets.get(user)
        if budget is None:
            budget = self._budgets[user] = SendBudget(user, self.user_send_bytes)
        return budget

    def release(self, user: str) -> None:
        """A connection :meth:`admit` counted is gone."""
        self._per_user[user] -= 1
        if self._per_user[user] <= 0:
            del self._per_user[user]
            self._budgets.pop(user, None)

    def track(self, ws: web.WebSocketResponse, user: str | None = None) -> None:
        """``ws`` is open; ``user``: it was admitted for that user."""
        self._open.add(ws)
        if user is not None:
            self._user_of[ws] = user

    def untrack(self, ws: web.WebSocketResponse) -> None:
        self._open.discard(ws)
        user = self._user_of.pop(ws, None)
        if user is not None:
            self.release(user)

    def __len__(self) -> int:
        return len(self._open)

    async def close_all(self, code: ErrorCode, reason: str) -> None:
        """Close every tracked WebSocket with ``code``."""
        await asyncio.gather(
            *(close_ws(ws, code, reason) for ws in list(self._open)),
            return_exceptions=True,
        )

    async def stop_lingering(self) -> None:
        """Stop the lingering closes of refused WebSockets."""
        for task in list(self._lingering):
            task.cancel()
        await asyncio.gather(*self._lingering, return_exceptions=True)


class WebSockets(Protocol):
    """What an endpoint needs of :class:`Sockets`."""

    def websocket(self) -> web.WebSocketResponse: ...

    def admit(self, user: str) -> None: ...

    def release(self, user: str) -> None: ...

    def budget(self, user: str) -> SendBudget: ...

    def track(self, ws: web.WebSocketResponse, user: str | None = None) -> None: ...

    def untrack(self, ws: web.WebSocketResponse) -> None: ...
