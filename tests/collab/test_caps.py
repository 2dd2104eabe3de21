"""Caps with clear errors: a document's size, each user's update rate and bytes, and each
connection's send queue in bytes. What is refused is neither stored nor broadcast."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import random
import socket
from pathlib import Path

import aiohttp
import psutil
import pytest
from gitcli import until
from pycrdt import Doc, Text
from serverproc import ServerProcess
from servers import make_config
from test_crash import stored_text
from yjsclient import YjsPeer

from collab import Client, CollabServer
from collab.live import room as room_module
from collab.live.quotas import UserQuotas
from protocol.errors import ErrorCode, ProtocolError
from protocol.lib0 import write_var_uint
from protocol.yjs import SyncStep1, SyncUpdate, encode_message

ROOM = "demo/main:README.md"
OTHER = "demo/main:src/app.py"
MB = 1024 * 1024


async def test_an_edit_past_the_document_cap_is_refused_and_nothing_of_it_kept(
    repos: Path, tmp_path: Path
) -> None:
    config = make_config(repos, tmp_path / "data", max_document=64 * 1024)
    async with (
        CollabServer(config) as server,
        Client(server.url, user="ann") as ann,
        Client(server.url, user="bob") as bob,
    ):
        doc = await ann.open(ROOM)
        other = await ann.open(OTHER)
        watching = await bob.open(ROOM)
        doc.insert(0, "x" * 30_000)
        await ann.flush()
        before = await watching.wait_for(lambda t: t.startswith("x" * 30_000))
        doc.insert(0, "§" * 20_000)  # 70,000 bytes: past the cap
        async with asyncio.timeout(5):
            while doc.error is None:
                await asyncio.sleep(0.01)
        assert doc.error.code == ErrorCode.DOCUMENT_FULL and doc.closed
        other.insert(0, "# the connection's other documents go on\n")
        await ann.flush()
        async with Client(server.url, user="late") as late:
            assert str(await late.open(ROOM)) == before  # not stored
            assert str(await late.open(OTHER)).startswith("# the connection's other")
        assert str(watching) == before  # not broadcast
        # a full document can still be made smaller, and then grow again
        watching.delete(0, 20_000)
        watching.insert(0, "z" * 10_000)
        await bob.flush()
    async with CollabServer(config) as again, Client(again.url, user="late") as late:
        assert "§" not in str(await late.open(ROOM))


async def test_a_stock_client_past_the_cap_is_closed_with_its_code(
    repos: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="collab")
    config = make_config(repos, tmp_path / "data", max_document=64 * 1024)
    async with CollabServer(config) as server, YjsPeer(server.url, ROOM, user="ann") as ann:
        await asyncio.wait_for(ann.synced.wait(), 5)
        ann.text.insert(0, "§" * 50_000)
        await asyncio.wait_for(ann.closed.wait(), 5)
        assert ann.close_code == ErrorCode.DOCUMENT_FULL
        assert "cap" in ann.close_reason
        room = server.rooms.get_key(ROOM)
        assert room is None or "§" not in str(room.text)
        await until(lambda: "(ann): disconnected" in caplog.text)
    assert "(ann): disconnected (code 4019)" in caplog.text  # the code it was closed with


async def test_text_deleted_as_it_is_inserted_cannot_grow_a_document_past_its_cap(
    repos: Path, tmp_path: Path
) -> None:
    """Each update inserts text already deleted, one run apart from the next: the text stays
    empty while the history (and the memory it takes) grows, until the history's cap
    (``HISTORY_FACTOR`` times the text's) closes the connection with 4019; deleting still
    passes, and the others go on."""
    cap = 16 * 1024
    config = make_config(repos, tmp_path / "data", max_document=cap)
    room_id = "demo/main:tombs.txt"
    async with (
        CollabServer(config) as server,
        YjsPeer(server.url, room_id, user="ann") as ann,
        YjsPeer(server.url, room_id, user="bob") as bob,
    ):
        await asyncio.wait_for(ann.synced.wait(), 5)
        await asyncio.wait_for(bob.synced.wait(), 5)
        base = "bob's line\n" * 100
        bob.text.insert(0, base)
        await ann.wait_text(lambda text: text == base)
        rng = random.Random(7)
        for _ in range(2000):
            if ann.closed.is_set():
                break
            with ann.doc.transaction():
                for _ in range(50):
                    at = rng.randrange(1, len(base))
                    ann.text.insert(at, "x")
                    del ann.text[at : at + 1]
            await asyncio.sleep(0.005)
        await asyncio.wait_for(ann.closed.wait(), 5)
        assert ann.close_code == ErrorCode.DOCUMENT_FULL
        assert "history" in ann.close_reason
        room = server.rooms.get_key(room_id)
        assert room is not None and str(room.text) == base
        assert len(room.doc.get_update()) <= room_module.HISTORY_FACTOR * cap + 4096
        del bob.text[0:2]  # a deletion passes
        await until(lambda: str(room.text) == base[2:])
        assert bob.close_code is None


async def test_a_history_deletions_grew_is_measured_before_it_takes_more_text(
    repos: Path, tmp_path: Path
) -> None:
    """A delete set alone always passes the caps (a full document can be made smaller), but
    it cuts the runs of text it deletes from, and the history grows: deleting every other
    character of a run takes it past its cap (``HISTORY_FACTOR`` times the text's). The
    next text is measured against it and refused with 4019; deleting still passes."""
    cap = 8 * 1024
    config = make_config(repos, tmp_path / "data", max_document=cap)
    room_id = "demo/main:cuts.txt"
    async with (
        CollabServer(config) as server,
        YjsPeer(server.url, room_id, user="ann") as ann,
        YjsPeer(server.url, room_id, user="bob") as bob,
    ):
        await asyncio.wait_for(ann.synced.wait(), 5)
        await asyncio.wait_for(bob.synced.wait(), 5)
        ann.text.insert(0, "x" * 8000)
        await bob.wait_text(lambda text: text == "x" * 8000)
        with ann.doc.transaction():
            for at in range(7999, 0, -2):
                del ann.text[at : at + 1]
        await bob.wait_text(lambda text: text == "x" * 4000)
        room = server.rooms.get_key(room_id)
        assert room is not None
        assert len(room.doc.get_update()) > room_module.HISTORY_FACTOR * cap
        ann.text.insert(0, "more")
        assert await ann.wait_closed() == ErrorCode.DOCUMENT_FULL
        assert "history" in ann.close_reason and str(room.text) == "x" * 4000
        del bob.text[0:2]  # a deletion passes
        await until(lambda: str(room.text) == "x" * 3998)
        assert bob.close_code is None


async def test_text_that_would_wait_pending_cannot_pass_the_cap(
    repos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Updates whose structs would wait for clocks not sent yet are not held pending in the
    document (out of the text, so out of the cap's count, until the few bytes that complete
    them bring them all in at once): they wait outside it, each applied (and counted) only
    once what it builds on is in; the bytes that complete them all are refused with 4019."""
    monkeypatch.setattr(room_module, "PARK_SECONDS", 0.3)
    cap = 1_000_000
    config = make_config(repos, tmp_path / "data", max_document=cap)
    async with CollabServer(config) as server, YjsPeer(server.url, ROOM, user="eve") as eve:
        await asyncio.wait_for(eve.synced.wait(), 5)
        before = str(eve.text)
        writer: Doc = Doc()
        writer.apply_update(eve.doc.get_update())
        text = writer.get("source", type=Text)
        fillers, chunks = [], []
        for k in range(3):
            state = writer.get_state()
            text.insert(0, f"{k}" * 10)
            fillers.append(writer.get_update(state))
            state = writer.get_state()
            text.insert(0, chr(ord("a") + k) * 900_000)
            chunks.append(writer.get_update(state))
        for update in chunks + fillers:  # each chunk waits for the filler before it
            await eve.send(encode_message(SyncUpdate(update)))
        await asyncio.wait_for(eve.closed.wait(), 10)
        assert eve.close_code == ErrorCode.DOCUMENT_FULL
        room = server.rooms.get_key(ROOM)
        assert room is not None and len(str(room.text).encode()) <= cap
        async with Client(server.url, user="late") as late:
            opened = str(await late.open(ROOM))
            assert len(opened.encode()) <= cap and opened.endswith(before)


async def test_a_user_over_the_update_quota_is_cut_off_and_others_go_on(
    repos: Path, tmp_path: Path
) -> None:
    config = make_config(repos, tmp_path / "data", user_update_rate=5.0, user_update_burst=10)
    async with CollabServer(config) as server, Client(server.url, user="bob") as bob:
        bob_doc = await bob.open(ROOM)
        flood = YjsPeer(server.url, ROOM, user="mallory")
        await flood.connect()
        try:
            await asyncio.wait_for(flood.synced.wait(), 5)
            for i in range(40):
                flood.text.insert(0, f"{i};")
                await asyncio.sleep(0)
            await asyncio.wait_for(flood.closed.wait(), 5)
            assert flood.close_code == ErrorCode.RATE_LIMITED
        finally:
            await flood.close()
        bob_doc.insert(0, "bob is fine\n")
        await bob.flush()
        async with Client(server.url, user="late") as late:
            text = str(await late.open(ROOM))
        assert text.startswith("bob is fine\n")
        assert text.count(";") <= 11  # the burst and what refilled, never the rest


async def test_a_user_over_the_byte_quota_is_cut_off(repos: Path, tmp_path: Path) -> None:
    config = make_config(repos, tmp_path / "data", user_byte_rate=10_000.0, user_byte_burst=100_000)
    async with CollabServer(config) as server, Client(server.url, user="eve") as eve:
        doc = await eve.open(ROOM)
        for _ in range(5):
            doc.insert(0, "b" * 30_000)
        async with asyncio.timeout(5):  # closed with 4029; the client tries again, later
            while eve.close_code != ErrorCode.RATE_LIMITED:
                await asyncio.sleep(0.01)


async def test_a_reader_that_never_reads_is_cut_off_by_bytes(repos: Path, tmp_path: Path) -> None:
    config = make_config(
        repos, tmp_path / "data", max_document=512 * MB, heartbeat=120.0, outbox_limit=100_000
    )
    async with CollabServer(config) as server, aiohttp.ClientSession() as session:
        # a stock-looking peer that completes its handshake, then never reads again
        sloth = await session.ws_connect(f"{server.url}/yjs/{ROOM}?user=sloth", max_msg_size=0)
        await sloth.send_bytes(encode_message(SyncStep1(Doc().get_state())))
        async with asyncio.timeout(5):
            while not (room := server.rooms.get_key(ROOM)) or not room.peers:
                await asyncio.sleep(0.01)
        (peer,) = room.peers
        writer: Doc = Doc()  # type: ignore[type-arg]
        text = writer.get("source", type=Text)
        async with YjsPeer(server.url, ROOM, user="ann") as ann:
            await asyncio.wait_for(ann.synced.wait(), 5)
            writer.apply_update(ann.doc.get_update())
            sent = 0
            while not peer.outbox.closing:  # type: ignore[attr-defined]
                assert sent < 40 * MB, "still queued for a reader that never reads"
                before = writer.get_state()
                text.insert(0, "s" * MB)
                await ann.send(encode_message(SyncUpdate(writer.get_update(before))))
                sent += MB
                del text[0:MB]
                await asyncio.sleep(0.02)
            assert peer.outbox.queued_bytes == 0  # type: ignore[attr-defined]
        await sloth.close()


async def _sloth(port: int, path: str, asks: int) -> socket.socket:
    """A WebSocket client with a small receive buffer that asks ``asks`` times for the whole
    document (sync step 1), then never reads."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    await loop.sock_sendall(
        sock,
        f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode(),
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += await loop.sock_recv(sock, 1)
    assert head.startswith(b"HTTP/1.1 101"), head
    ask = encode_message(SyncStep1(Doc().get_state()))
    mask = os.urandom(4)
    framed = (
        bytes([0x82, 0x80 | len(ask)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(ask))
    )
    for _ in range(asks):
        await loop.sock_sendall(sock, framed)
    return sock


async def test_many_readers_of_one_user_that_never_read_are_cut_off_by_their_bytes_together(
    repos: Path, tmp_path: Path
) -> None:
    """Each connection of one user asks for a large document's state and never reads: each
    stays under its own cap, but together they pass the user's (``user_send_bytes``), and
    the ones that would pass it are closed with 4008; another user is not."""
    config = make_config(
        repos, tmp_path / "data", heartbeat=120.0, outbox_bytes=32 * MB, user_send_bytes=24 * MB
    )
    async with CollabServer(config) as server:
        async with YjsPeer(server.url, ROOM, user="ann") as ann:
            await asyncio.wait_for(ann.synced.wait(), 5)
            ann.text.insert(0, "big " * MB)  # a 4 MiB document
            await until(lambda: len(str(server.rooms.get_key(ROOM).text)) > 4 * MB)  # type: ignore[union-attr]
        sloths = [await _sloth(server.port, f"/yjs/{ROOM}?user=sloth", 4) for _ in range(6)]
        room = server.rooms.get_key(ROOM)
        assert room is not None
        # the connections past the user's cap are closed (and leave the room)
        refusals = server._yjs.traffic.refusals
        await until(lambda: refusals["close", ErrorCode.SLOW_READER] >= 2)
        assert 0 < len(room.peers) < len(sloths)
        budget = server.sockets.budget("sloth")
        assert budget.used <= 24 * MB
        queued = sum(p.outbox.queued_bytes for p in room.peers)  # type: ignore[attr-defined]
        assert queued <= 24 * MB
        async with YjsPeer(server.url, ROOM, user="bob") as bob:  # another user still reads
            await bob.wait_text(lambda text: len(text) > 4 * MB)
        for sloth in sloths:
            sloth.close()


async def test_memory_stays_bounded_when_a_client_fills_a_document(
    repos: Path, tmp_path: Path
) -> None:
    server = ServerProcess(repos, tmp_path / "data", extra_args=("--max-document", str(8 * MB)))
    await server.start()
    try:
        assert server.proc is not None
        process = psutil.Process(server.proc.pid)
        async with Client(server.url, user="ann") as ann:
            doc = await ann.open(ROOM)
            for _ in range(20):  # 1 MB at a time, past the 8 MB cap
                doc.insert(0, "m" * MB)
                await asyncio.sleep(0.05)
                if doc.error is not None:
                    break
            assert doc.error is not None and doc.error.code == ErrorCode.DOCUMENT_FULL
            peak = process.memory_info().rss
        assert peak < 400 * MB, f"server RSS {peak / MB:.0f} MB"
        stored = await stored_text(server.data_dir, ROOM)
        assert len(stored.encode()) <= 8 * MB
    finally:
        await server.stop()


def test_an_update_over_the_update_quota_takes_nothing_of_the_byte_quota() -> None:
    quotas = UserQuotas(update_rate=0.001, update_burst=1, byte_rate=0.001, byte_burst=1000)
    quotas.charge("alice", 400)
    for _ in range(5):  # refused by the update quota, each time
        with pytest.raises(ProtocolError) as refused:
            quotas.charge("alice", 400)
        assert refused.value.code is ErrorCode.RATE_LIMITED
        assert "updates per second" in refused.value.message
    quotas.updates.refund("alice")  # (as if a second had passed for the update quota)
    quotas.charge("alice", 600)  # the 600 bytes left of the burst are all there


async def test_an_awareness_flood_closes_its_sender_before_the_peers_queues_fill(
    server: CollabServer,
) -> None:
    """Every awareness state is relayed to every peer of its document: one client sending
    16 KiB states without pause would fill its peers' send queues (4008 for them). Its
    awareness quota closes it (4029) after a few MiB; the peers stay, and take edits."""
    async with YjsPeer(server.url, ROOM, user="honest") as honest:
        await asyncio.wait_for(honest.synced.wait(), 5)
        async with YjsPeer(server.url, ROOM, user="mallory") as mallory:
            await asyncio.wait_for(mallory.synced.wait(), 5)
            me = mallory.doc.client_id
            sent = 0
            for clock in range(1, 2000):
                if mallory.close_code is not None:
                    break
                await mallory.set_awareness(me, clock, {"pad": "x" * 16_000})
                sent += 16_000
                await asyncio.sleep(0)
            assert await mallory.wait_closed() == ErrorCode.RATE_LIMITED
        burst = server.config.user_awareness_burst
        assert sent < burst + 2 * 1024 * 1024  # closed soon after its burst
        assert honest.close_code is None
        honest.text.insert(0, "still here ")
        async with YjsPeer(server.url, ROOM, user="later") as later:
            await later.wait_text(lambda text: text.startswith("still here "))


def test_awareness_has_a_quota_of_its_own_and_one_large_table_still_goes_out() -> None:
    quotas = UserQuotas(
        update_rate=0,
        update_burst=0,
        byte_rate=0,
        byte_burst=0,
        awareness_rate=0.001,
        awareness_burst=1000,
    )
    quotas.charge("alice", 10**9)  # updates are not limited here
    quotas.charge_awareness("alice", 5000)  # over the burst: counted as the whole burst
    with pytest.raises(ProtocolError) as refused:
        quotas.charge_awareness("alice", 1)
    assert refused.value.code is ErrorCode.RATE_LIMITED
    assert "awareness bytes per second" in refused.value.message


async def test_a_user_holds_at_most_max_user_sockets_connections(
    repos: Path, tmp_path: Path
) -> None:
    """Past ``max_user_sockets`` open at once (``/yjs`` and ``/ws`` together), a user's next
    connection is refused with 4029; other users are not counted with it, and a closed
    connection gives its place back."""
    config = make_config(repos, tmp_path / "data", max_user_sockets=3)
    async with CollabServer(config) as server:
        peers = [YjsPeer(server.url, ROOM, user="ann") for _ in range(2)]
        for peer in peers:
            await peer.connect()
        async with Client(server.url, user="ann") as third:  # a /ws connection counts too
            await third.open(ROOM)
            async with YjsPeer(server.url, ROOM, user="ann") as fourth:
                assert await fourth.wait_closed() == ErrorCode.RATE_LIMITED
            async with YjsPeer(server.url, ROOM, user="bob") as bob:
                await asyncio.wait_for(bob.synced.wait(), 5)
        await until(lambda: len(server.sockets) == 2)  # the /ws one is gone
        async with YjsPeer(server.url, ROOM, user="ann") as again:
            await asyncio.wait_for(again.synced.wait(), 5)
            assert again.close_code is None
        for peer in peers:
            await peer.close()


async def test_a_document_whose_state_passes_8_mib_opens_in_the_python_client(
    repos: Path, tmp_path: Path
) -> None:
    """The whole state a document opens with is larger than its text: a cap set above the
    default (``--max-document``) lets it pass 8 MiB, which the client read as a frame over
    its limits, and it waited for an open that never came. It opens."""
    config = make_config(repos, tmp_path / "data", max_document=12 * MB)
    async with CollabServer(config) as server:
        async with Client(server.url, user="ann") as ann:
            doc = await ann.open(ROOM)
            for k in range(9):
                doc.insert(0, chr(ord("a") + k) * MB)
                await ann.flush()
        async with Client(server.url, user="late") as late:
            opened = await asyncio.wait_for(late.open(ROOM), 20)
            assert len(str(opened)) > 9 * MB


async def test_sync_step_1_sent_again_and_again_is_cut_off_by_the_bytes_it_brings(
    repos: Path, tmp_path: Path
) -> None:
    """A sync step 1 is a few bytes, answered with the whole document: sent again and again
    it would make the server send gigabytes for kilobytes. What answers cost counts against
    a quota per user; past it the connection is closed with 4029, and others go on."""
    config = make_config(
        repos, tmp_path / "data", user_answer_rate=64 * 1024.0, user_answer_burst=MB
    )
    async with CollabServer(config) as server:
        async with Client(server.url, user="ann") as ann:
            doc = await ann.open(ROOM)
            doc.insert(0, "x" * 100_000)
            await ann.flush()
        async with (
            YjsPeer(server.url, ROOM, user="mallory") as mallory,
            YjsPeer(server.url, ROOM, user="bob") as bob,
        ):
            await asyncio.wait_for(mallory.synced.wait(), 5)
            await asyncio.wait_for(bob.synced.wait(), 5)
            for _ in range(40):  # 4 MB of answers asked for, in 160 bytes
                await mallory.send(encode_message(SyncStep1(b"\x00")))
            await asyncio.wait_for(mallory.closed.wait(), 10)
            assert mallory.close_code == ErrorCode.RATE_LIMITED
            bob.text.insert(0, "bob goes on\n")
            async with Client(server.url, user="late") as late:
                opened = await late.open(ROOM)
                await opened.wait_for(lambda t: t.startswith("bob goes on\n"))


def state_vector(clients: int) -> bytes:
    """A state vector of ``clients`` 32-bit client ids (one clock each)."""
    out = bytearray()
    write_var_uint(out, clients)
    for client in range(2**31, 2**31 + clients):
        write_var_uint(out, client)
        write_var_uint(out, 1)
    return bytes(out)


async def test_a_sync_step_1_is_bounded_by_the_document_it_is_about(
    server: CollabServer,
) -> None:
    """A state vector grows with the clients a document has, so a sync step 1 is not refused
    for a length of its own (a document thousands wrote in has one past 64 KiB); one longer
    than the document's own by more than 64 KiB names clients no copy of it has, and is
    refused with 4009 before it is read."""
    within = state_vector(10_000)  # 60 KB: clients the server lacks, under 64 KiB of them
    over = state_vector(12_000)  # 72 KB
    async with YjsPeer(server.url, ROOM, user="ann") as ann:
        await asyncio.wait_for(ann.synced.wait(), 5)
        room = server.rooms.get_key(ROOM)
        assert room is not None
        own = len(room.state_vector())
        assert len(within) - own < 64 * 1024 < len(over) - own
        ann.synced.clear()
        await ann.send(encode_message(SyncStep1(within)))
        await asyncio.wait_for(ann.synced.wait(), 5)  # answered
        await ann.send(encode_message(SyncStep1(over)))
        assert await ann.wait_closed() == ErrorCode.TOO_LARGE
        assert "over the document's own" in ann.close_reason
