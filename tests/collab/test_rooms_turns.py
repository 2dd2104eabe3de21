"""An open that comes in the very turn of the event loop in which the document's load or
unload ends (a message read off another socket then) is served, and the server goes on.

The load (or unload) is wrapped so that a second open starts in that turn, as a message
read off another socket does; a watchdog thread interrupts the test if the event loop
stops turning (an open that waits for an ended task again and again never yields)."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from collab import Client, CollabServer
from collab.live.rooms import Rooms, _Holder
from protocol.names import DocId

ROOM = "demo/main:README.md"
FROZEN_AFTER = 20.0


class LoopFrozen(Exception):
    """The event loop did not turn for :data:`FROZEN_AFTER` seconds."""


@contextmanager
def loop_watchdog() -> Iterator[None]:
    """Raise :class:`LoopFrozen` in the main thread (where the loop runs) if the running
    event loop stops turning while in the block."""
    loop = asyncio.get_running_loop()
    beat = [time.monotonic()]
    stop = threading.Event()

    def frozen(_signum: int, _frame: Any) -> None:
        raise LoopFrozen(f"the event loop did not turn for {FROZEN_AFTER:.0f} s")

    def watch() -> None:
        while not stop.wait(0.5):
            loop.call_soon_threadsafe(beat.__setitem__, 0, time.monotonic())
            if time.monotonic() - beat[0] > FROZEN_AFTER:
                signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGUSR1)
                return

    previous = signal.signal(signal.SIGUSR1, frozen)
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()
        signal.signal(signal.SIGUSR1, previous)


async def _acquire_and_leave(rooms: Rooms, doc_id: DocId) -> str:
    holder = _Holder()
    room = await rooms.acquire(doc_id, holder)
    room.detach(holder)
    return str(room.text)


async def test_an_open_in_the_turn_its_document_finishes_loading_is_served(
    server: CollabServer, monkeypatch: Any
) -> None:
    rooms = server.rooms
    real_load = rooms._load
    second: list[asyncio.Task[str]] = []

    async def load(doc_id: DocId) -> Any:
        room = await real_load(doc_id)
        second.append(asyncio.ensure_future(_acquire_and_leave(rooms, doc_id)))
        return room

    monkeypatch.setattr(rooms, "_load", load)
    with loop_watchdog():
        async with Client(server.url, user="alice") as alice:
            doc = await alice.open(ROOM)
            text = await asyncio.wait_for(second[0], 10)
            assert text == str(doc.text)
            doc.text += "!"  # and the room goes on
            await alice.flush()


async def test_an_open_in_the_turn_its_document_finishes_unloading_is_served(
    server: CollabServer, monkeypatch: Any
) -> None:
    rooms = server.rooms
    real_unload = rooms._unload
    second: list[asyncio.Task[str]] = []

    async def unload(room: Any, *, persist: bool) -> None:
        await real_unload(room, persist=persist)
        if persist and not second:
            second.append(asyncio.ensure_future(_acquire_and_leave(rooms, room.doc_id)))

    monkeypatch.setattr(rooms, "_unload", unload)
    with loop_watchdog():
        async with Client(server.url, user="alice") as alice:
            doc = await alice.open(ROOM)
            doc.text += "kept"
            await alice.flush()
            alice.forget(doc)
        async with asyncio.timeout(30):  # (the grace time, then the unload)
            while not second:
                await asyncio.sleep(0.05)
        assert "kept" in await asyncio.wait_for(second[0], 10)
