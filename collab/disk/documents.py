"""The live documents a working tree has open: opened on demand, at most ``limit`` at once
(the server caps open documents per connection), the least recently used closed first.

A document is open while its file is hot: edited on disk, open in someone's editor, or
changed by a commit. Each open document reports its changes to ``on_change`` (with its path),
whoever made them; the syncer tells its own edits apart by content, not by origin.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from protocol.errors import ErrorCode

from ..client import Client, Document

__all__ = ["FLUSH_WAIT", "Documents"]

FLUSH_WAIT = 30.0
"""Seconds an open waits for the server to confirm edits made while it was away, so that
their documents may be closed to make room."""


class Documents:
    """Open documents of one branch, by path."""

    def __init__(
        self,
        client: Client,
        repo: str,
        branch: str,
        on_change: Callable[[str], None],
        *,
        limit: int = 200,
    ) -> None:
        self.client = client
        self.prefix = f"{repo}/{branch}:"
        self.on_change = on_change
        self.limit = limit
        self._open: OrderedDict[str, Document] = OrderedDict()
        self._watches: dict[str, Any] = {}
        self._opening: dict[str, asyncio.Task[Document]] = {}
        self.busy: Callable[[str], bool] = lambda _path: False
        self._full: set[str] = set()  # closed by the server as past its size cap (4019)

    def __len__(self) -> int:
        return len(self._open)

    def get(self, path: str) -> Document | None:
        document = self._open.get(path)
        if document is not None and document.closed:
            error = document.error
            if error is not None and error.code == ErrorCode.DOCUMENT_FULL:
                self._full.add(path)
            self._drop(path)
            return None
        return document

    def refused_as_full(self, path: str) -> bool:
        """Whether the server closed ``path``'s document since this was last asked because
        an edit would take it past its size cap (``DOCUMENT_FULL``): that edit is not
        live."""
        self.get(path)
        if path in self._full:
            self._full.discard(path)
            return True
        return False

    async def open(self, path: str) -> Document:
        """The open document of ``path``, opened now if it is not (raises ``ClientError``
        when the server refuses it: not text, too large...)."""
        document = self.get(path)
        if document is not None:
            self._open.move_to_end(path)
            return document
        task = self._opening.get(path)
        if task is None:
            task = asyncio.ensure_future(self._open_new(path))
            self._opening[path] = task
            task.add_done_callback(lambda _t: self._opening.pop(path, None))
        return await asyncio.shield(task)

    async def _open_new(self, path: str) -> Document:
        await self._make_room()
        document = await self.client.open(self.prefix + path)
        self._open[path] = document
        self._watches[path] = document.doc.observe(lambda _event: self.on_change(path))
        return document

    async def _make_room(self) -> None:
        flushed = False
        while len(self._open) + len(self._opening) > self.limit:
            victim = next((p for p in self._open if self._closable(p)), None)
            if victim is None and not flushed and self._unconfirmed():
                # edits made while the server was away: once it has them (when it is back),
                # their documents may be closed (opened past the limit, the next documents
                # were refused by the server's own cap, and taken for files not text)
                flushed = True
                with contextlib.suppress(TimeoutError, ConnectionError):
                    await self.client.flush(FLUSH_WAIT)
                continue
            if victim is None:
                return  # everything is in use: the server refuses past its own cap
            await self.close(victim)

    def _unconfirmed(self) -> bool:
        return any(_unconfirmed(document) for document in self._open.values())

    def _closable(self, path: str) -> bool:
        """Not in use, and holding no edit the server has not confirmed durable (one made
        while it was away: closing the document would drop it)."""
        return not self.busy(path) and not _unconfirmed(self._open[path])

    async def close(self, path: str) -> None:
        document = self._open.get(path)
        if document is None:
            return
        self._drop(path)
        # at once: a server that is away must not hold up the syncer's shutdown, nor the
        # opening of another file (only a document not busy is closed to make room)
        await document.close(timeout=0)

    def _drop(self, path: str) -> None:
        document = self._open.pop(path)
        watch = self._watches.pop(path, None)
        if watch is not None and not document.closed:
            document.doc.unobserve(watch)

    async def close_all(self) -> None:
        for path in list(self._open):
            await self.close(path)


def _unconfirmed(document: Document) -> bool:
    """Whether ``document`` holds edits the server has not confirmed durable."""
    return document.confirmed < document.edits
