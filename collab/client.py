"""``collab.Client``: an asyncio client of the ``/ws`` protocol with pycrdt documents."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from types import TracebackType
from typing import Any

import aiohttp
from pycrdt import Doc, Subscription, Text, TransactionEvent

from protocol import messages as m
from protocol.errors import ErrorCode, ProtocolError
from protocol.yjs import AwarenessEntry, decode_awareness, encode_awareness

from .live.epochs import client_id
from .live.offsets import utf8_offset, utf16_to_codepoint
from .live.seed import TEXT_NAME

__all__ = ["Client", "ClientError", "Document"]

log = logging.getLogger("collab.client")

AWARENESS_RENEW = 15.0  # seconds; Yjs drops remote awareness states older than 30 s
_PERMANENT = {
    ErrorCode.UNAUTHORIZED,
    ErrorCode.FORBIDDEN,
    ErrorCode.UNSUPPORTED_VERSION,
    ErrorCode.MALFORMED,
    ErrorCode.INVALID_UPDATE,
}
_HARMLESS = {ErrorCode.READ_ONLY, ErrorCode.RATE_LIMITED}  # errors that leave a document open
# The server's answers (server.status of a large deployment, say) may hold more values than
# the server takes from a client: no count of values here, beyond the one a byte allows; and
# a document's whole state, sent when it opens, is larger than its text, whose cap the
# server sets (``--max-document``): no size limit either, beyond what a frame can say; nor
# on a string (a merge preview's diff) or the entries of a list (a branch's files).
_SERVER_FRAME = 2**32 - 1
_SERVER_LIMITS = m.Limits(
    max_values=_SERVER_FRAME,
    max_message=_SERVER_FRAME,
    max_bin=_SERVER_FRAME,
    max_str=_SERVER_FRAME,
    max_items=_SERVER_FRAME,
    max_depth=64,
)


def _describe(exc: BaseException) -> str:
    """A connection failure in a few words: its text, else its type."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, ConnectionRefusedError):
            return "connection refused (is the server running, on that port?)"
        return exc.os_error.strerror or str(exc.os_error) or type(exc.os_error).__name__
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        return f"HTTP {exc.status} {exc.message}"
    return str(exc) or type(exc).__name__


def _not_found(exc: BaseException) -> bool:
    """Whether the WebSocket handshake was answered 404: retrying will not help."""
    return isinstance(exc, aiohttp.WSServerHandshakeError) and exc.status == 404


class ClientError(Exception):
    """The server refused a request; ``code`` says why."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Document:
    """An open document: a pycrdt ``Doc`` kept in sync with the server, both ways.

    The server may close it: ``error`` then says why, and ``closed`` is true. With
    ``RELOAD`` (4017) this copy belongs to a history the server no longer has (its store
    was lost): open the document again for a fresh copy; nothing of this one is merged.
    A document the server quarantines later (``DAMAGED``, 4018: its stored history is
    damaged) stays open here and is opened again every ``max_backoff`` seconds: once the
    store is repaired, this copy sends back the edits the repair could not keep."""

    def __init__(self, client: Client, ref: int, doc_id: str) -> None:
        self.client = client
        self.ref = ref
        self.id = doc_id
        self.error: ClientError | None = None
        self.doc: Doc[Any] = Doc(client_id=client_id())
        self._applying_remote = False
        self.text: Text = self.doc.get(TEXT_NAME, type=Text)
        self.writable = False
        self.synced = asyncio.Event()
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.awareness: dict[int, dict[str, Any]] = {}
        self._awareness_clock = 0
        self._local_state: dict[str, Any] | None = None
        self._changed = asyncio.Event()
        self._subscription: Subscription | None = self.doc.observe(self._on_transaction)
        self.closed = False
        self.edits = 0
        """Edits made here so far."""
        self.confirmed = 0
        """Of those, how many the server has confirmed durable (see ``Client.flush``)."""

    @property
    def client_id(self) -> int:
        return int(self.doc.client_id)

    def __str__(self) -> str:
        return str(self.text)

    def _on_transaction(self, event: TransactionEvent) -> None:
        self._changed.set()
        if self._applying_remote:  # observers run synchronously inside apply_update
            return
        update = bytes(event.update)
        if update != b"\x00\x00":
            self.edits += 1
            self.client.send(m.Sync(self.ref, m.SyncStep.UPDATE, update))

    def insert(self, index: int, value: str) -> None:
        """Insert ``value`` at code point ``index`` (pycrdt itself counts UTF-8 bytes)."""
        text = str(self.text)
        self.text.insert(utf8_offset(text, index), value)

    def delete(self, index: int, length: int) -> None:
        """Delete ``length`` code points from code point ``index``."""
        text = str(self.text)
        start = utf8_offset(text, index)
        del self.text[start : utf8_offset(text, index + length)]

    def apply_remote(self, update: bytes) -> None:
        self._applying_remote = True
        try:
            self.doc.apply_update(update)
        finally:
            self._applying_remote = False

    def set_awareness(self, state: dict[str, Any] | None) -> None:
        """Publish this client's awareness state (cursor, name...); ``None`` to leave."""
        self._local_state = state
        self._awareness_clock += 1
        self._send_awareness()

    def renew_awareness(self) -> None:
        """Re-publish the local state with a new clock (on reopen, and periodically: Yjs
        peers drop a remote state that is not renewed within 30 s)."""
        if self._local_state is not None:
            self._awareness_clock += 1
            self._send_awareness()

    def _send_awareness(self) -> None:
        if self._local_state is None and self._awareness_clock == 0:
            return
        entry = AwarenessEntry(self.client_id, self._awareness_clock, self._local_state)
        self.client.send(m.Awareness(self.ref, encode_awareness([entry])))

    def receive_awareness(self, payload: bytes) -> None:
        for entry in decode_awareness(payload):
            if entry.client_id == self.client_id:
                continue
            if entry.state is None:
                self.awareness.pop(entry.client_id, None)
            else:
                self.awareness[entry.client_id] = entry.state
        self._changed.set()

    async def wait_for(self, predicate: Callable[[str], bool], timeout: float = 10.0) -> str:
        """Wait until ``predicate(text)`` holds; return the text. Raises ``ClientError`` if
        the server closes the document meanwhile."""
        async with asyncio.timeout(timeout):
            while True:
                self._changed.clear()
                if self.error is not None:
                    raise self.error
                text = str(self.text)
                if predicate(text):
                    return text
                await self._changed.wait()

    async def close(self, timeout: float = 10.0) -> None:
        """Stop editing this document. Edits made here that the server has not confirmed
        (made while disconnected, or just now) are sent first: the close waits until the
        server holds them durably (``Client.flush``), for up to ``timeout`` seconds; past
        that, ``TimeoutError``, and the document stays open with its edits. With a
        ``timeout`` of 0 it closes at once, and such edits are dropped."""
        if self.closed:
            return
        if self.edits > self.confirmed and not self.client.closing and self.writable and timeout:
            await self.client.flush(timeout)
        if not self.closed:
            self.closed = True
            self.client.forget(self)

    def detach(self) -> None:
        """Stop sending this copy's edits (its text stays readable). The observer holds the
        document through the CRDT core, where the garbage collector cannot see the cycle:
        a document never detached is never freed."""
        if self._subscription is not None:
            self.doc.unobserve(self._subscription)
            self._subscription = None

    def closed_by_server(self, error: ClientError) -> None:
        """The server closed this document (see the class docstring)."""
        if self.closed:
            return
        self.closed = True
        self.error = error
        self.detach()
        self.client.docs.pop(self.ref, None)
        if not self.opened.done():
            self.opened.set_exception(error)
        self.synced.set()  # nothing more to wait for
        self._changed.set()


class Client:
    """Connects to ``url`` (``ws://host:port``, the server's base URL; its ``/ws`` endpoint
    is taken for it too), authenticates, opens documents, reconnects.

    ``async with Client(url, token=...) as client: doc = await client.open("demo/main:a.py")``

    The server closes a connection when its token expires (4001). Assign ``client.token`` a
    new token before then: the client reconnects with it, its documents kept. Without a new
    one, the client gives up as on any refusal of its credentials.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        user: str | None = None,
        reconnect: bool = True,
        min_backoff: float = 0.05,
        max_backoff: float = 5.0,
    ) -> None:
        # the server's base URL; the ``/ws`` endpoint the banner shows is taken for it too
        self.url = url.rstrip("/").removesuffix("/ws") + "/ws"
        self.token = token
        self.user = user
        self.reconnect = reconnect
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.docs: dict[int, Document] = {}
        self.connected = asyncio.Event()
        self.close_code: int | None = None
        self.errors: list[m.Error] = []
        self.reconnects = 0
        self.on_reconnect: list[Callable[[], None]] = []  # called as each reconnection is welcomed
        self._next_ref = 1
        self._next_ping = 1
        self._pongs: dict[int, asyncio.Future[None]] = {}
        self._connection = 0  # counts welcomes: which connection the documents synced on
        self._failure: ClientError | None = None  # why the client gave up, once it has
        self._gave_up = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._next_call = 1
        self._calls: dict[int, asyncio.Future[Any]] = {}
        self._resubscribe: dict[str, dict[str, Any]] = {}
        self.events: asyncio.Queue[m.Event] = asyncio.Queue(maxsize=10_000)
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._outgoing: asyncio.Queue[bytes] = asyncio.Queue()
        self._runner: asyncio.Task[None] | None = None
        self._closed = False
        self._last_error: str | None = None  # why the last connection attempt failed
        self._hello_token: str | None = None  # the token the last connection was opened with

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def connect(self, timeout: float = 10.0) -> None:
        """Connect and authenticate; later disconnects reconnect in the background.

        Raises ``ClientError`` if the server refuses (with its code and reason), and
        ``ConnectionError`` naming the URL and the last failure if no connection could be
        made within ``timeout`` seconds (the client retries until then)."""
        self._session = aiohttp.ClientSession()
        welcomed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._runner = asyncio.create_task(self._run(welcomed))
        try:
            async with asyncio.timeout(timeout):
                await welcomed
        except TimeoutError:
            await self.close()
            cause = self._last_error or "no answer to the hello"
            raise ConnectionError(
                f"cannot connect to {self.url} within {timeout:g} s: {cause}"
            ) from None
        except BaseException:
            await self.close()
            raise

    @property
    def closing(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    async def close(self) -> None:
        """Disconnect; the documents' texts stay readable, and nothing more is sent."""
        self._closed = True
        for document in self.docs.values():
            document.detach()
        for task in self._tasks:
            task.cancel()
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
            self._runner = None
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def drop_connection(self) -> None:
        """Close the socket as a network failure would (tests, and forcing a resync)."""
        if self._ws is not None:
            await self._ws.close(code=4999)

    def send(self, message: m.Message) -> None:
        if self.connected.is_set():
            self._outgoing.put_nowait(m.encode(message))

    def forget(self, document: Document) -> None:
        document.detach()
        if self.docs.pop(document.ref, None) is not None:
            self.send(m.Close(document.ref))

    async def open(self, doc_id: str, timeout: float = 10.0) -> Document:
        """Open ``<repo>/<branch>:<path>`` and wait until it holds the server's state."""
        ref = self._next_ref
        self._next_ref += 1
        document = Document(self, ref, doc_id)
        self.docs[ref] = document
        self.send(m.Open(ref, doc_id))
        try:
            async with asyncio.timeout(timeout):
                await document.opened
                await document.synced.wait()
        except BaseException:
            self.docs.pop(ref, None)
            raise
        return document

    async def flush(self, timeout: float = 10.0) -> None:
        """Return once the server has durably stored (fsynced) every edit made so far,
        including those made while disconnected.

        Edits made offline reach the server in the reconnect handshake, so the ping that
        asks for the acknowledgement is sent only once every open document has been synced
        again on the current connection; if the connection drops first, it starts over."""
        async with asyncio.timeout(timeout):
            while True:
                await self._wait_connected()
                connection = self._connection
                for document in list(self.docs.values()):
                    await document.synced.wait()  # our answer to its step 1 is queued
                if connection != self._connection or not self.connected.is_set():
                    continue
                ping_id = self._next_ping
                self._next_ping += 1
                future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self._pongs[ping_id] = future
                made = [(document, document.edits) for document in self.docs.values()]
                self.send(m.Ping(ping_id))
                try:
                    await future
                except ConnectionError:
                    continue  # dropped before the pong: ask again on the next connection
                for document, edits in made:
                    document.confirmed = max(document.confirmed, edits)
                return

    async def call(self, op: str, timeout: float = 30.0, **args: Any) -> Any:
        """Run server operation ``op`` (``branch.list``, ``merge.apply``, ``complete``...)
        and return its value; raise ``ClientError`` with the server's code when it fails.

        A call in flight when the connection drops raises ``ConnectionError``: it may or may
        not have run."""
        await self._wait_connected()
        call_id = self._next_call
        self._next_call += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._calls[call_id] = future
        self.send(m.Call(call_id, op, args))
        try:
            async with asyncio.timeout(timeout):
                return await future
        finally:
            self._calls.pop(call_id, None)

    async def subscribe(self, op: str, **args: Any) -> Any:
        """Call a subscribing operation (``events.subscribe``) and repeat it after every
        reconnect, so that events keep arriving on :attr:`events`."""
        value = await self.call(op, **args)
        self._resubscribe[f"{op}\0{sorted(args.items())!r}"] = {"op": op, **args}
        return value

    # -- completions (the operations of ``collab.completion``) ---------------------------------

    async def complete(
        self, document: Document | str, index: int, *, mode: str = "line", **options: Any
    ) -> dict[str, Any]:
        """Ask for a completion at code point ``index`` of an open document. The server reads
        the text itself; the answer has ``id``, ``text``, ``index`` and ``latency``. A newer
        request for the same document cancels this one (``ClientError`` 4016).

        With an open :class:`Document`, the request also carries the text before the cursor
        as this client sees it (``before``), so that the server answers where that text is
        even if others' edits, not yet here, moved it (the answer's ``index`` says where)."""
        doc = document.id if isinstance(document, Document) else document
        if isinstance(document, Document) and "before" not in options:
            text = str(document)
            at = utf16_to_codepoint(text, index) if options.get("unit") == "utf16" else index
            if 0 <= at <= len(text):
                options["before"] = text[max(0, at - 64) : at]
        return dict(await self.call("complete", doc=doc, index=index, mode=mode, **options))

    async def accept(self, completion: dict[str, Any] | str, length: int | None = None) -> Any:
        """Insert an answered completion (or its first ``length`` code points) where it was
        asked for; the edit is the AI's, on this user's behalf."""
        offer = completion if isinstance(completion, str) else completion["id"]
        extra = {} if length is None else {"length": length}
        return await self.call("complete.accept", id=offer, **extra)

    # -- branches (each is a ``call`` of the operation named in ``collab.git.branch_ops``) -----

    async def branches(self, repo: str) -> list[dict[str, Any]]:
        """Every branch of ``repo``: name, head, and who is on it (user and path)."""
        return await self.call("branch.list", repo=repo)  # type: ignore[no-any-return]

    async def join(self, repo: str, source: str | None = None) -> str:
        """Make sure this user has their own branch in ``repo``; return its name."""
        args: dict[str, Any] = {"repo": repo} if source is None else {"repo": repo, "from": source}
        return str((await self.call("branch.join", **args))["name"])

    async def fork(self, repo: str, source: str, name: str | None = None) -> str:
        """Fork ``source`` at its live state; return the new branch's name."""
        args: dict[str, Any] = {"repo": repo, "source": source}
        if name is not None:
            args["name"] = name
        return str((await self.call("branch.fork", **args))["name"])

    async def commit(self, repo: str, branch: str) -> str:
        """Commit the branch's pending live edits now; return its head."""
        return str((await self.call("branch.commit", repo=repo, branch=branch))["head"])

    async def merge(
        self,
        repo: str,
        source: str,
        target: str,
        *,
        apply: bool = True,
        markers: bool = False,
        no_ff: bool = False,
        source_head: str | None = None,
        target_head: str | None = None,
    ) -> dict[str, Any]:
        """Merge ``source`` into ``target`` (a preview when ``apply`` is false). A
        fast-forward moves ``target`` to ``source``'s head unless ``no_ff`` asks for a merge
        commit. ``source_head`` and ``target_head`` (a preview's ``source`` and ``target``)
        refuse the merge with ``CONFLICT`` if either branch has moved since."""
        if not apply:
            return await self.call(  # type: ignore[no-any-return]
                "merge.preview", repo=repo, source=source, target=target
            )
        heads: dict[str, Any] = {"source_head": source_head, "target_head": target_head}
        return await self.call(  # type: ignore[no-any-return]
            "merge.apply",
            repo=repo,
            source=source,
            target=target,
            markers=markers,
            no_ff=no_ff,
            **{name: head for name, head in heads.items() if head is not None},
        )

    async def _run(self, welcomed: asyncio.Future[None]) -> None:
        backoff = self.min_backoff
        while not self._closed:
            try:
                await self._connect_once(welcomed)
                backoff = self.min_backoff
            except ClientError as exc:
                if not welcomed.done():
                    welcomed.set_exception(exc)
                renewed = exc.code == ErrorCode.UNAUTHORIZED and self.token != self._hello_token
                if exc.code in _PERMANENT and not (renewed and welcomed.done()):
                    self._fail(exc)
                    return
            except ProtocolError as exc:  # a frame this client cannot read: it would again
                unreadable = ClientError(exc.code, f"the server sent a frame not understood: {exc}")
                if not welcomed.done():
                    welcomed.set_exception(unreadable)
                self._fail(unreadable)
                return
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                if _not_found(exc) and not welcomed.done():  # no collab server at that address
                    error = ConnectionError(
                        f"cannot connect to {self.url}: HTTP 404, nothing serves /ws there; "
                        "give the server's base URL, ws://HOST:PORT"
                    )
                    welcomed.set_exception(error)
                    self._fail(ClientError(ErrorCode.NOT_FOUND, str(error)))
                    return
                log.info("connection to %s failed: %s", self.url, exc)
                self._last_error = _describe(exc)
                if not welcomed.done() and not self.reconnect:
                    welcomed.set_exception(exc)
            finally:
                self.connected.clear()
            if not self.reconnect or self._closed:
                if not welcomed.done():
                    welcomed.set_exception(ConnectionError("disconnected"))
                self._fail(ClientError(self.close_code or 1006, "disconnected"))
                return
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, self.max_backoff)
            self.reconnects += 1

    async def _wait_connected(self) -> None:
        """Wait for a connection; raise why the client gave up, if it has."""
        while not self.connected.is_set():
            if self._failure is not None:
                raise self._failure
            waiters = [asyncio.ensure_future(e.wait()) for e in (self.connected, self._gave_up)]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
        if self._failure is not None:
            raise self._failure

    def _fail(self, exc: ClientError) -> None:
        self._failure = exc
        self._gave_up.set()
        for document in self.docs.values():
            if not document.opened.done():
                document.opened.set_exception(exc)
        for future in self._pongs.values():
            if not future.done():
                future.set_exception(exc)
        self._drop_calls()

    def _drop_pongs(self) -> None:
        for future in self._pongs.values():
            if not future.done():
                future.set_exception(ConnectionError("disconnected before the pong"))
        self._pongs.clear()

    def _drop_calls(self) -> None:
        for future in self._calls.values():
            if not future.done():
                future.set_exception(ConnectionError("disconnected before the call returned"))
        self._calls.clear()

    async def _connect_once(self, welcomed: asyncio.Future[None]) -> None:
        assert self._session is not None
        async with self._session.ws_connect(self.url, heartbeat=30.0, max_msg_size=0) as ws:
            self._ws = ws
            self._hello_token = self.token
            await ws.send_bytes(m.encode(m.Hello(m.PROTOCOL_VERSION, self.token, self.user)))
            writer = asyncio.create_task(self._write(ws))
            renewer = asyncio.create_task(self._renew_awareness())
            reason = ""
            try:
                while True:
                    msg = await ws.receive()
                    if msg.type is aiohttp.WSMsgType.BINARY:
                        self._receive(m.decode(msg.data, _SERVER_LIMITS), welcomed)
                    elif msg.type is aiohttp.WSMsgType.CLOSE:
                        reason = str(msg.extra or "")
                        break
                    elif msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                        break
            finally:
                writer.cancel()
                renewer.cancel()
                await asyncio.gather(writer, renewer, return_exceptions=True)
                self._ws = None
                self.connected.clear()
                self._drop_calls()
                self._drop_pongs()
                while not self._outgoing.empty():  # the next handshake resends what matters
                    self._outgoing.get_nowait()
            self.close_code = ws.close_code
            if ws.close_code is not None and ws.close_code >= 4000:
                raise ClientError(ws.close_code, reason or "closed by server")

    async def _renew_awareness(self) -> None:
        while True:
            await asyncio.sleep(AWARENESS_RENEW)
            for document in list(self.docs.values()):
                document.renew_awareness()

    async def _write(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while True:
            frame = await self._outgoing.get()
            await ws.send_bytes(frame)

    def _receive(self, message: m.Message, welcomed: asyncio.Future[None]) -> None:
        match message:
            case m.Welcome():
                self.user = message.user
                self._connection += 1
                self.connected.set()
                if not welcomed.done():
                    welcomed.set_result(None)
                for document in self.docs.values():  # (re)open: the server answers with step 1
                    document.synced.clear()
                    self.send(m.Open(document.ref, document.id))
                for sub in self._resubscribe.values():
                    call_id = self._next_call
                    self._next_call += 1
                    args = {k: v for k, v in sub.items() if k != "op"}
                    self.send(m.Call(call_id, sub["op"], args))
                if self._connection > 1:  # (what was sent meanwhile, events, is gone)
                    for hook in list(self.on_reconnect):
                        try:
                            hook()
                        except Exception:
                            log.exception("a reconnection hook failed")
            case m.Result(id=call_id):
                pending = self._calls.pop(call_id, None)
                if pending is not None and not pending.done():
                    if message.ok:
                        pending.set_result(message.value)
                    else:
                        code = int(message.code or ErrorCode.INTERNAL)
                        pending.set_exception(ClientError(code, message.message or ""))
            case m.Event():
                if self.events.full():
                    self.events.get_nowait()  # keep the newest
                self.events.put_nowait(message)
            case m.Opened(ref=ref, writable=writable):
                self._opened(ref, writable)
            case m.Sync(ref=ref, step=step, data=data):
                self._sync(ref, step, data)
            case m.Awareness(ref=ref, data=data):
                if (target := self.docs.get(ref)) is not None:
                    target.receive_awareness(data)
            case m.Pong(id=ping_id):
                future = self._pongs.pop(ping_id, None)
                if future is not None and not future.done():
                    future.set_result(None)
            case m.Error(code=code, message=text, ref=ref):
                self.errors.append(message)
                failed = self.docs.get(ref) if ref is not None else None
                # an open it refuses raises it to the caller: no need to say it twice
                opening = failed is not None and not failed.opened.done()
                level = logging.DEBUG if opening else logging.WARNING
                log.log(level, "server error %d: %s", code, text)
                if failed is None or (failed.opened.done() and code in _HARMLESS):
                    pass
                elif failed.opened.done() and code == ErrorCode.DAMAGED:
                    self._reopen_later(failed)  # quarantined: keep our copy, it may help
                else:
                    failed.closed_by_server(ClientError(code, text))
            case m.Close():
                pass
            case _:
                log.warning("unexpected %s from server", type(message).__name__)

    def _reopen_later(self, document: Document) -> None:
        """Open ``document`` again after a while: the server quarantined its stored history,
        and once an operator repairs it, this copy sends back what the repair could not
        keep (it is the same history)."""

        async def reopen() -> None:
            await asyncio.sleep(self.max_backoff)
            if self.docs.get(document.ref) is document and self.connected.is_set():
                self.send(m.Open(document.ref, document.id))

        task = asyncio.create_task(reopen())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _opened(self, ref: int, writable: bool) -> None:
        document = self.docs.get(ref)
        if document is None:
            return
        document.writable = writable
        self.send(m.Sync(ref, m.SyncStep.STEP1, document.doc.get_state()))
        document.renew_awareness()
        if not document.opened.done():
            document.opened.set_result(None)

    def _sync(self, ref: int, step: m.SyncStep, data: bytes) -> None:
        document = self.docs.get(ref)
        if document is None:
            return
        if step is m.SyncStep.STEP1:
            diff = document.doc.get_update(data)
            if document.writable and diff != b"\x00\x00":
                self.send(m.Sync(ref, m.SyncStep.STEP2, diff))
            return
        document.apply_remote(data)
        if step is m.SyncStep.STEP2:
            document.synced.set()
