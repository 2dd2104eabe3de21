"""A store lost under clients that still hold their documents: the old history is never
merged into the new one (every line would be doubled); the clients are told to reload."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from gitcli import head_file
from jsfleet import JsFleet, require_js
from pycrdt import Doc, Text
from servers import DEMO_FILES, make_config
from yjsclient import YjsPeer

from collab import Client, CollabServer
from collab.live.epochs import EPOCH_BASE, client_id, epochs_in, is_epoch, new_epoch, with_epoch
from collab.live.seed import seed_update
from collab.server.auth import Identity, Role
from protocol.errors import ErrorCode, ProtocolError

ROOM = "demo/main:README.md"


def text_of(update: bytes) -> str:
    doc: Doc[Any] = Doc()
    doc.apply_update(update)
    return str(doc.get("source", type=Text))


def test_an_epoch_marker_leaves_the_text_alone_and_names_its_epoch() -> None:
    seed = seed_update(b"blob", "line one\nline two\n")
    epoch = new_epoch()
    update = with_epoch(seed, epoch)
    assert text_of(update) == "line one\nline two\n"
    doc: Doc[Any] = Doc()
    doc.apply_update(update)
    assert epochs_in(doc.get_state()) == {epoch}
    assert with_epoch(seed, epoch) == update  # the same seeding twice is the same state
    assert epochs_in(Doc().get_state()) == frozenset()
    empty = with_epoch(seed_update(None, ""), epoch)  # an empty file is marked too
    assert text_of(empty) == ""


def test_epoch_ids_and_client_ids_never_meet() -> None:
    assert all(is_epoch(new_epoch()) for _ in range(1000))
    assert not any(is_epoch(client_id()) for _ in range(1000))
    assert not is_epoch(2**32 - 1)  # a Yjs client's id
    assert is_epoch(EPOCH_BASE) and is_epoch(2**53 - 1) and not is_epoch(2**53)


def _head(repos: Path) -> tuple[str, str]:
    return head_file(repos / "demo", "README.md")


def _lose_store(data_dir: Path, how: str) -> None:
    store = data_dir / "store.sqlite3"
    if how == "deleted":
        for suffix in ("", "-wal", "-shm"):
            Path(f"{store}{suffix}").unlink(missing_ok=True)
    else:
        with closing(sqlite3.connect(store)) as conn:
            conn.execute("DELETE FROM records")
            conn.execute("DELETE FROM docs")
            conn.commit()


@pytest.mark.parametrize("how", ["deleted", "emptied"])
async def test_a_lost_store_tells_clients_to_reload_and_doubles_nothing(
    repos: Path, tmp_path: Path, how: str
) -> None:
    config = make_config(repos, tmp_path / "data", commit_idle=0.05)
    first = CollabServer(config)
    await first.start()
    config.port = first.port  # the restart listens where the clients reconnect
    client = Client(first.url, user="ann", min_backoff=0.05, max_backoff=0.2)
    await client.connect()
    yjs_state = b""
    try:
        doc = await client.open(ROOM)
        doc.insert(len(str(doc)), "typed by ann\n")
        await client.flush()
        await client.commit("demo", "main")
        typed = str(doc)
        async with YjsPeer(first.url, ROOM, user="bob") as bob:
            await asyncio.wait_for(bob.synced.wait(), 5)
            yjs_state = bob.doc.get_update()
        await first.stop()
        head_before = _head(repos)
        assert head_before[1] == typed
        _lose_store(config.data_dir, how)

        async with CollabServer(config) as second:
            # the Python client reconnects by itself and is told to reload
            async with asyncio.timeout(10):
                while doc.error is None:
                    await asyncio.sleep(0.02)
            assert doc.error.code == ErrorCode.RELOAD and doc.closed
            assert str(doc) == typed  # its copy is left as it was
            # a stock Yjs peer holding the old history is closed with the same code
            stale = YjsPeer(second.url, ROOM, user="bob")
            stale.doc.apply_update(yjs_state)
            await stale.connect()
            try:
                await asyncio.wait_for(stale.closed.wait(), 5)
                assert stale.close_code == ErrorCode.RELOAD
                assert "open the document again" in stale.close_reason
            finally:
                await stale.close()
            # the server's copy is the branch head, once: nothing was merged in
            room = second.rooms.get_key(ROOM)
            assert room is None or str(room.text) == typed
            reopened = await client.open(ROOM)
            assert str(reopened) == typed
            await client.flush()
            await asyncio.sleep(0.2)  # past the commit idle time
            await second.git.branches[("demo", "main")].flush()
            assert _head(repos) == head_before  # git unchanged
    finally:
        await client.close()


class _Peer:
    identity = Identity("eve", Role.WRITE, "*")


async def test_a_handshake_from_another_epoch_is_refused(server: CollabServer) -> None:
    async with Client(server.url, user="ann") as client:
        doc = await client.open(ROOM)
        room = server.rooms.get_key(ROOM)
        assert room is not None and len(room.epochs) == 1
        old = Doc()
        old.apply_update(with_epoch(seed_update(b"old", DEMO_FILES["README.md"]), new_epoch()))
        with pytest.raises(ProtocolError) as refused:
            room.handshake(_Peer(), old.get_state())
        assert refused.value.code == ErrorCode.RELOAD
        with pytest.raises(ProtocolError) as answer:
            room.receive_update(old.get_update(), sender=_Peer(), answer=True)
        assert answer.value.code == ErrorCode.RELOAD
        # the same epoch, however far ahead, is welcome: its edits are merged
        ahead = Doc()
        ahead.apply_update(doc.doc.get_update())
        ahead.get("source", type=Text).insert(0, "offline edit\n")
        await room.receive_update(ahead.get_update(), sender=_Peer(), answer=True)
        assert str(room.text).startswith("offline edit\n")
        assert room.handshake(_Peer(), ahead.get_state()) is not None


@pytest.mark.js
async def test_a_stock_yjs_client_is_told_to_reload_after_the_store_is_lost(
    repos: Path, tmp_path: Path
) -> None:
    require_js()
    config = make_config(repos, tmp_path / "data", commit_idle=0.05)
    first = CollabServer(config)
    await first.start()
    config.port = first.port
    url = f"{first.url}/yjs"
    async with JsFleet() as fleet:
        await fleet.call_ok("open", client="js", url=url, room=ROOM, params={"user": "jo"})
        await fleet.call_ok("insert", client="js", index=0, text="typed in JS\n")
        typed = "typed in JS\n" + DEMO_FILES["README.md"]
        async with Client(first.url, user="watcher") as watcher:
            await (await watcher.open(ROOM)).wait_for(lambda t: t == typed)
        await first.git.branches[("demo", "main")].flush()
        await first.stop()
        _lose_store(config.data_dir, "deleted")
        async with CollabServer(config) as second:
            async with asyncio.timeout(15):
                while True:  # y-websocket reconnects by itself, and is refused each time
                    state = await fleet.call_ok("state", client="js")
                    if any(code == ErrorCode.RELOAD for code, _reason in state["closes"]):
                        break
                    await asyncio.sleep(0.05)
            assert state["text"] == typed
            async with Client(second.url, user="late") as late:
                assert str(await late.open(ROOM)) == typed  # once, not twice
            assert _head(repos)[1] == typed
