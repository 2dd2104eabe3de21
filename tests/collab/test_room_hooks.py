"""The registry's hooks are lists: a second subscriber adds to the first, never replaces it."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from collab import Client, ClientError, CollabServer
from gitsync import BranchNotFound
from protocol import ErrorCode
from protocol.names import DocId

ROOM = "demo/main:README.md"


async def test_every_subscriber_of_a_hook_is_called_in_order(server: CollabServer) -> None:
    calls: list[tuple[str, Any]] = []
    server.rooms.on_room.append(lambda room: calls.append(("room", room.key)))
    server.rooms.on_join.append(lambda room, peer: calls.append(("join-1", peer.identity.user)))
    server.rooms.on_join.append(lambda room, peer: calls.append(("join-2", peer.identity.user)))

    def broken(room: Any, peer: Any) -> None:
        raise RuntimeError("a hook that fails")

    server.rooms.on_leave.insert(0, broken)  # logged; the others still run
    server.rooms.on_leave.append(lambda room, peer: calls.append(("leave", peer.identity.user)))
    events: list[dict[str, Any]] = []
    server.events.subscribe("demo", lambda _repo, event: events.append(event))
    async with Client(server.url, user="ann") as ann:
        doc = await ann.open(ROOM)
        await doc.close()
        await ann.flush()
    assert calls == [("room", ROOM), ("join-1", "ann"), ("join-2", "ann"), ("leave", "ann")]
    presence = [(e["user"], e["action"]) for e in events if e["kind"] == "presence"]
    assert presence == [("ann", "join"), ("ann", "leave")]  # the branches' own hooks too


async def test_a_branch_without_rooms_is_forgotten_once_they_unload(server: CollabServer) -> None:
    async with Client(server.url, user="ann") as ann:
        doc = await ann.open(ROOM)
        doc.insert(0, "typed\n")
        await ann.flush()
        assert ("demo", "main") in server.git.branches
        await doc.close()
    async with asyncio.timeout(10):  # committed, unloaded after the grace time, forgotten
        while ("demo", "main") in server.git.branches or server.rooms.loaded():
            await asyncio.sleep(0.02)
    async with Client(server.url, user="ann") as ann:  # made again on next use
        assert str(await ann.open(ROOM)).startswith("typed\n")


async def test_a_room_whose_persist_fails_at_shutdown_is_unloaded_without_a_retry(
    server: CollabServer,
) -> None:
    async with Client(server.url, user="ann") as ann:
        doc = await ann.open(ROOM)
        doc.insert(0, "typed\n")
        await ann.flush()
        room = server.rooms.get_key(ROOM)
        assert room is not None

        tries: list[str] = []

        async def failing(failed: Any) -> None:
            tries.append(failed.key)
            raise RuntimeError("a persist that fails")

        server.rooms.before_unload.insert(0, failing)
        await server.rooms.close()
        assert server.rooms.get_key(ROOM) is None
        await asyncio.sleep(server.rooms.grace * 3)  # nothing retries against a stopped store
        assert tries == [ROOM]
        stored = await server.store.load(ROOM)  # the typed update is in the store all the same
        assert stored is not None and (stored.updates or stored.snapshot)


async def test_an_open_that_fails_on_the_server_fails_that_document_only(
    server: CollabServer,
) -> None:
    """A branch deleted while a document of it loads is 4004 for that document; any other
    failure is 4500 for it; the connection's other documents go on."""
    failures: list[BaseException] = [BranchNotFound("demo/main"), RuntimeError("disk on fire")]

    async def failing(doc_id: DocId) -> None:
        if doc_id.path == "src/app.py" and failures:
            raise failures.pop(0)

    server.rooms.before_load.insert(0, failing)
    async with Client(server.url, user="alice") as alice:
        readme = await alice.open("demo/main:README.md")
        with pytest.raises(ClientError) as gone:
            await alice.open("demo/main:src/app.py")
        assert gone.value.code == ErrorCode.NOT_FOUND
        with pytest.raises(ClientError) as failed:
            await alice.open("demo/main:src/app.py")
        assert failed.value.code == ErrorCode.INTERNAL
        readme.insert(0, "still here ")
        await alice.flush()
        app = await alice.open("demo/main:src/app.py")
        assert str(app.text) == "print('hello')\n"
    async with Client(server.url, user="bob") as bob:
        assert str((await bob.open("demo/main:README.md")).text).startswith("still here ")


async def test_a_yjs_open_that_fails_on_the_server_is_closed_with_its_code(
    server: CollabServer,
) -> None:
    failures: list[BaseException] = [BranchNotFound("demo/main"), RuntimeError("disk on fire")]

    async def failing(doc_id: DocId) -> None:
        if failures:
            raise failures.pop(0)

    server.rooms.before_load.insert(0, failing)
    url = server.url.replace("ws://", "http://") + "/yjs/demo/main:README.md?user=alice"
    async with aiohttp.ClientSession() as session:
        for code in (ErrorCode.NOT_FOUND, ErrorCode.INTERNAL):
            async with session.ws_connect(url) as ws:
                message = await ws.receive()
                assert message.type is aiohttp.WSMsgType.CLOSE and message.data == code
        async with session.ws_connect(url) as ws:  # and the next one opens
            message = await ws.receive()
            assert message.type is aiohttp.WSMsgType.BINARY
