"""Rooms of two nodes joined through the bus (``ClusterLink``), on the in-process hub: the
real ``Rooms``, ``Room`` and repositories of each node, peers that record what they are sent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pycrdt import Doc, Text

from collab.bus.link import ClusterLink
from collab.bus.local import LocalHub
from collab.live.room import Room
from collab.live.rooms import Rooms
from collab.server.auth import Identity, Role
from gitsync import Repositories
from protocol.errors import ErrorCode
from protocol.names import DocId
from protocol.yjs import AwarenessEntry, decode_awareness, encode_awareness

DOC = DocId.parse("demo/main:README.md")


@dataclass(eq=False)
class Peer:
    """A subscriber that keeps a document of its own in step with what it is sent."""

    name: str
    doc: Doc[Any] = field(default_factory=Doc)
    awareness: list[AwarenessEntry] = field(default_factory=list)

    @property
    def identity(self) -> Identity:
        return Identity(self.name, Role.WRITE, "*")

    def send_updates(self, updates: list[bytes]) -> None:
        for update in updates:
            self.doc.apply_update(update)

    def send_awareness(self, payload: bytes) -> None:
        self.awareness += decode_awareness(payload)

    def abort(self, code: ErrorCode, reason: str) -> None:
        raise AssertionError(f"{self.name} aborted: {code} {reason}")

    @property
    def text(self) -> str:
        return str(self.doc.get("source", type=Text))


@dataclass
class Node:
    rooms: Rooms
    link: ClusterLink


class Nodes:
    def __init__(self, repos: Path) -> None:
        self.hub = LocalHub()
        self.repos = repos
        self.made: list[tuple[Node, Repositories]] = []

    async def node(self, name: str) -> Node:
        store, bus = self.hub.store(name), self.hub.bus(name)
        await store.start()
        await bus.start()
        repositories = Repositories(self.repos)
        rooms = Rooms(store, repositories, grace=60)
        node = Node(rooms, ClusterLink(rooms, bus, store))
        self.made.append((node, repositories))
        return node

    async def close(self) -> None:
        for node, repositories in self.made:
            await node.rooms.close()
            await node.link.bus.stop()
            repositories.close()


@pytest.fixture
async def nodes(repos: Path) -> AsyncIterator[Nodes]:
    made = Nodes(repos)
    try:
        yield made
    finally:
        await made.close()


async def join(node: Node, peer: Peer) -> Room:
    room = await node.rooms.acquire(DOC, peer)
    peer.doc.apply_update(room.handshake(peer, peer.doc.get_state()))
    return room


def type_into(peer: Peer, room: Room, text: str) -> asyncio.Future[None]:
    before = peer.doc.get_state()
    source = peer.doc.get("source", type=Text)
    source.insert(len(source), text)
    return room.receive_update(peer.doc.get_update(before), sender=peer)


async def until(check: Callable[[], bool]) -> None:
    for _ in range(2000):
        if check():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("did not happen")


async def test_an_edit_on_one_node_reaches_the_peers_of_another(nodes: Nodes) -> None:
    a, b = await nodes.node("a"), await nodes.node("b")
    ann, bob = Peer("ann"), Peer("bob")
    room_a = await join(a, ann)
    room_b = await join(b, bob)
    await type_into(ann, room_a, "from ann\n")
    await type_into(bob, room_b, "from bob\n")
    await until(lambda: "from bob" in ann.text and "from ann" in bob.text)
    assert ann.text == bob.text == str(room_a.text) == str(room_b.text)
    assert ann.text.count("from ann") == 1 and ann.text.count("from bob") == 1


async def test_a_node_seeding_second_sees_what_was_typed_on_the_first(nodes: Nodes) -> None:
    a, b = await nodes.node("a"), await nodes.node("b")
    ann, bob = Peer("ann"), Peer("bob")
    # both load the document at once, before anything is stored: each may seed it
    room_a, _room_b = await asyncio.gather(join(a, ann), join(b, bob))
    await type_into(ann, room_a, "typed on a\n")
    await until(lambda: "typed on a" in bob.text)
    assert bob.text == ann.text
    assert bob.text.count("typed on a") == 1
    seeded = str(room_a.text).replace("typed on a\n", "")
    assert "\n" in seeded and seeded == ann.text.replace("typed on a\n", "")


async def test_peers_converge_across_a_compaction(nodes: Nodes) -> None:
    a, b = await nodes.node("a"), await nodes.node("b")
    ann, bob = Peer("ann"), Peer("bob")
    room_a, room_b = await join(a, ann), await join(b, bob)
    for i in range(30):
        await type_into(ann, room_a, f"a{i} ")
        if i % 3 == 0:
            await type_into(bob, room_b, f"b{i} ")
    await room_a.compact()
    await type_into(bob, room_b, "after ")
    await until(lambda: "after" in ann.text and bob.text == ann.text)
    assert str(room_a.text) == str(room_b.text) == ann.text
    for i in range(30):
        assert ann.text.count(f"a{i} ") == 1


async def test_awareness_crosses_nodes_and_leaves_with_its_node(nodes: Nodes) -> None:
    a, b = await nodes.node("a"), await nodes.node("b")
    ann, bob = Peer("ann"), Peer("bob")
    room_a, _room_b = await join(a, ann), await join(b, bob)
    state = {"user": {"name": "forged", "color": "#f00"}, "cursor": 3}
    room_a.receive_awareness(ann, encode_awareness([AwarenessEntry(11, 1, state)]))
    await until(lambda: bool(bob.awareness))
    assert bob.awareness[-1].client_id == 11
    assert bob.awareness[-1].state is not None
    assert bob.awareness[-1].state["user"]["name"] == "ann"  # stamped on ann's node
    await a.link.bus.stop()  # node a is gone: its peers' cursors leave with it
    await until(lambda: bob.awareness[-1].state is None)
    assert bob.awareness[-1].client_id == 11


async def test_a_full_awareness_table_takes_new_ids_once_removed_states_make_room(
    nodes: Nodes,
) -> None:
    a = await nodes.node("a")
    ann, bob, cat = Peer("ann"), Peer("bob"), Peer("cat")
    room = await join(a, ann)
    await join(a, bob)
    await join(a, cat)
    room.max_awareness = 2
    here = {"cursor": 1}

    def ids() -> list[int]:
        return sorted(entry.client_id for entry in room.awareness_entries())

    room.receive_awareness(ann, encode_awareness([AwarenessEntry(1, 1, here)]))
    room.receive_awareness(bob, encode_awareness([AwarenessEntry(2, 1, here)]))
    room.receive_awareness(cat, encode_awareness([AwarenessEntry(3, 1, here)]))  # full
    room.receive_remote_awareness("b", encode_awareness([AwarenessEntry(4, 7, here)]))  # full
    assert ids() == [1, 2]
    room.receive_awareness(ann, encode_awareness([AwarenessEntry(1, 2, {"cursor": 2})]))
    assert ids() == [1, 2]  # an id the table holds is always taken
    room.receive_awareness(bob, encode_awareness([AwarenessEntry(2, 2, None)]))  # bob leaves
    room.receive_remote_awareness("b", encode_awareness([AwarenessEntry(4, 7, here)]))
    assert ids() == [1, 4]  # bob's removed state made room
    room.receive_awareness(cat, encode_awareness([AwarenessEntry(3, 1, here)]))  # full again
    assert ids() == [1, 4]
    room.receive_remote_awareness("b", encode_awareness([AwarenessEntry(4, 7, None)]))
    room.receive_awareness(cat, encode_awareness([AwarenessEntry(3, 1, here)]))
    assert ids() == [1, 3]
    # the others hear what was taken, and nothing that was dropped
    assert [entry.client_id for entry in ann.awareness if entry.state is not None] == [2, 4, 3]


async def test_a_node_behind_in_the_log_skips_a_snapshot_made_further_along(
    nodes: Nodes, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = await nodes.node("a"), await nodes.node("b")
    ann, bob = Peer("ann"), Peer("bob")
    room_a, room_b = await join(a, ann), await join(b, bob)
    await type_into(ann, room_a, "one ")
    await until(lambda: "one" in bob.text)
    behind = a.link.bus.position(str(DOC))
    assert behind is not None
    await type_into(bob, room_b, "two ")
    await until(lambda: "two" in ann.text)
    await room_b.compact()  # through b's position, past the one a is held at below
    ahead = (await a.rooms.store.load(str(DOC))) or pytest.fail("nothing stored")
    assert ahead.snapshot_seq > behind
    room_a.compact_bound = lambda: behind  # a's feed lagging behind b's snapshot
    with caplog.at_level("INFO", logger="collab.room"):
        await room_a.compact()  # skipped: no error, nothing replaced
    assert "further along is stored already" in caplog.text
    stored = (await a.rooms.store.load(str(DOC))) or pytest.fail("nothing stored")
    assert (stored.snapshot, stored.snapshot_seq) == (ahead.snapshot, ahead.snapshot_seq)
    assert room_a.updates_since_snapshot == 0  # not tried again at every edit


async def test_a_room_not_following_the_log_makes_no_snapshot(nodes: Nodes) -> None:
    a = await nodes.node("a")
    ann = Peer("ann")
    room = await join(a, ann)
    await type_into(ann, room, "typed ")
    before = (await a.rooms.store.load(str(DOC))) or pytest.fail("nothing stored")
    a.link.bus.unwatch(str(DOC))  # as once the bus has stopped
    await room.compact()
    after = (await a.rooms.store.load(str(DOC))) or pytest.fail("nothing stored")
    assert before.snapshot is None
    assert (after.snapshot, after.snapshot_seq, after.updates) == (None, 0, before.updates)


async def test_one_person_holds_a_share_of_the_awareness_table_and_of_the_ids_kept(
    nodes: Nodes,
) -> None:
    """A person with many connections gets a share of the table (their tabs), not the whole
    of it; and the thousands of ids one person makes up evict only their own record of who
    held which id, so the id someone else comes back with is still theirs."""
    a = await nodes.node("a")
    ann = Peer("ann")
    room = await join(a, ann)
    room.max_awareness = 64  # a share of 8
    here = {"cursor": 1}
    room.receive_awareness(ann, encode_awareness([AwarenessEntry(77, 1, here)]))
    room.receive_awareness(ann, encode_awareness([AwarenessEntry(77, 2, None)]))  # ann leaves
    room.detach(ann)
    tabs = [Peer("mallory") for _ in range(20)]
    for k, tab in enumerate(tabs):
        await join(a, tab)
        room.receive_awareness(tab, encode_awareness([AwarenessEntry(1000 + k, 1, here)]))
    held = [e.client_id for e in room.awareness_entries() if e.state is not None]
    assert len(held) == 8  # mallory's share
    bob = Peer("bob")
    await join(a, bob)
    room.receive_awareness(bob, encode_awareness([AwarenessEntry(5, 1, here)]))
    assert 5 in [e.client_id for e in room.awareness_entries() if e.state is not None]
    # mallory makes up ids by the thousand, on connection after connection
    for k in range(5000):
        tab = Peer("mallory")
        await join(a, tab)
        room.receive_awareness(tab, encode_awareness([AwarenessEntry(10_000 + k, 1, here)]))
        room.receive_awareness(tab, encode_awareness([AwarenessEntry(10_000 + k, 2, None)]))
        room.detach(tab)
    thief = Peer("mallory")
    await join(a, thief)
    room.receive_awareness(thief, encode_awareness([AwarenessEntry(77, 3, here)]))
    assert room.awareness_ids.get(thief) is None  # ann's id stays ann's
    back = Peer("ann")
    await join(a, back)
    room.receive_awareness(back, encode_awareness([AwarenessEntry(77, 3, here)]))
    assert room.awareness_ids.get(back) == 77
