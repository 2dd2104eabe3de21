"""What one peer's awareness can do to the others' editors: a caret the bindings cannot read
is not relayed (it threw in every other page's editor, whose remote carets then stopped for
good), and a client id one person held is not taken over by another after they left."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from yjsclient import YjsPeer

from collab import CollabServer
from collab.live.carets import DROPPED, caret_of

ROOM = "demo/main:README.md"

# a caret as y-codemirror.next writes it (Y.relativePositionToJSON of both ends)
CODEMIRROR = {
    "anchor": {"type": {"client": 7, "clock": 0}, "item": {"client": 7, "clock": 12}},
    "head": {"tname": "text", "assoc": -1},
}
# and as y-monaco does (the RelativePosition objects, every field there)
MONACO = {
    "anchor": {"type": None, "tname": "text", "item": None, "assoc": 0},
    "head": {"type": None, "tname": None, "item": {"client": 9, "clock": 4}, "assoc": 0},
}
HOSTILE: list[Any] = [
    {"anchor": "x", "head": "y"},
    {"anchor": {"item": {"client": "zz", "clock": "x"}}, "head": {"tname": "text"}},
    {"anchor": {}, "head": {}},  # names nothing: Yjs throws
    {"anchor": {"item": {"client": 1, "clock": -1}}, "head": {"tname": "text"}},
    {"anchor": {"item": {"client": 2**60, "clock": 1}}, "head": {"tname": "text"}},
    {"anchor": {"item": {"client": True, "clock": 1}}, "head": {"tname": "text"}},
    {"anchor": {"tname": ["text"]}, "head": {"tname": "text"}},
    {"anchor": {"tname": "text", "assoc": "0"}, "head": {"tname": "text"}},
]


@pytest.mark.parametrize("caret", HOSTILE)
def test_a_caret_the_bindings_cannot_read_is_dropped(caret: Any) -> None:
    assert caret_of("cursor", caret) is DROPPED
    assert caret_of("selection", caret) is DROPPED


def test_carets_the_bindings_write_are_relayed() -> None:
    assert caret_of("cursor", MONACO) == MONACO  # written out whole already
    assert caret_of("cursor", None) is None
    assert caret_of("cursor", {"index": 3}) == {"index": 3}  # no caret a binding reads
    assert caret_of("selection", MONACO) == MONACO
    assert caret_of("selection", None) is None
    assert caret_of("selection", {"index": 3}) is DROPPED  # y-monaco reads it as one
    # every field there: y-codemirror.next and y-monaco read a missing one as present
    assert (
        caret_of("cursor", CODEMIRROR)
        == caret_of("selection", CODEMIRROR)
        == {
            "anchor": {
                "type": {"client": 7, "clock": 0},
                "tname": None,
                "item": {"client": 7, "clock": 12},
                "assoc": 0,
            },
            "head": {"type": None, "tname": "text", "item": None, "assoc": -1},
        }
    )


async def test_a_hostile_caret_reaches_no_one_and_the_rest_of_its_state_does(
    server: CollabServer,
) -> None:
    async with (
        YjsPeer(server.url, ROOM, user="mallory") as mallory,
        YjsPeer(server.url, ROOM, user="ann") as ann,
    ):
        await asyncio.wait_for(ann.synced.wait(), 5)
        await asyncio.wait_for(mallory.synced.wait(), 5)
        for clock, caret in enumerate(HOSTILE, start=1):
            await mallory.set_awareness(
                501, clock, {"cursor": caret, "selection": caret, "n": clock}
            )
            await ann.wait_text(lambda _t, n=clock: (ann.awareness.get(501) or {}).get("n") == n)
            assert ann.awareness[501] == {"n": clock, "user": {"name": "mallory"}}
        last = len(HOSTILE) + 1
        await mallory.set_awareness(501, last, {"cursor": MONACO, "selection": MONACO})
        await ann.wait_text(lambda _t: "cursor" in (ann.awareness.get(501) or {}))
        assert ann.awareness[501] == {
            "cursor": MONACO,
            "selection": MONACO,
            "user": {"name": "mallory"},
        }


async def test_a_client_id_is_not_taken_over_by_another_person_after_its_holder_left(
    server: CollabServer,
) -> None:
    async with YjsPeer(server.url, ROOM, user="bob") as bob:
        await asyncio.wait_for(bob.synced.wait(), 5)
        async with YjsPeer(server.url, ROOM, user="ann") as ann:
            await asyncio.wait_for(ann.synced.wait(), 5)
            await ann.set_awareness(777, 1, {"cursor": CODEMIRROR})
            await bob.wait_text(lambda _t: 777 in bob.awareness)
        await bob.wait_text(lambda _t: bob.awareness.get(777, "gone") is None)  # ann left
        async with YjsPeer(server.url, ROOM, user="mallory") as mallory:
            await asyncio.wait_for(mallory.synced.wait(), 5)
            await mallory.set_awareness(777, 1000, {"cursor": None, "posing": True})
            await mallory.set_awareness(778, 1, {"mallory's own": True})
            await bob.wait_text(lambda _t: 778 in bob.awareness)  # relayed after 777's
            assert bob.awareness.get(777) is None
            # ann's page comes back with its id, at the clock it had: hers again
            async with YjsPeer(server.url, ROOM, user="ann") as again:
                await asyncio.wait_for(again.synced.wait(), 5)
                await again.set_awareness(777, 2, {"cursor": CODEMIRROR, "back": True})
                await bob.wait_text(lambda _t: (bob.awareness.get(777) or {}).get("back"))
                assert bob.awareness[777]["user"] == {"name": "ann"}


async def test_a_client_id_stays_its_holders_after_a_full_table_evicted_its_entry(
    server: CollabServer,
) -> None:
    async with YjsPeer(server.url, ROOM, user="bob") as bob:
        await asyncio.wait_for(bob.synced.wait(), 5)
        room = server.rooms.get_key(ROOM)
        assert room is not None
        room.max_awareness = 3  # a small table, filled by three people
        async with YjsPeer(server.url, ROOM, user="ann") as ann:
            await asyncio.wait_for(ann.synced.wait(), 5)
            await ann.set_awareness(777, 1, {"cursor": CODEMIRROR})
            await bob.wait_text(lambda _t: 777 in bob.awareness)
        await bob.wait_text(lambda _t: bob.awareness.get(777, "gone") is None)  # ann left
        async with (
            YjsPeer(server.url, ROOM, user="carl") as carl,
            YjsPeer(server.url, ROOM, user="dora") as dora,
        ):
            for n, peer in enumerate((carl, dora)):
                await asyncio.wait_for(peer.synced.wait(), 5)
                await peer.set_awareness(801 + n, 1, {"n": n})
            async with YjsPeer(server.url, ROOM, user="emil") as emil:
                await asyncio.wait_for(emil.synced.wait(), 5)
                await emil.set_awareness(803, 1, {"n": 2})  # 777's entry is evicted for it
                await bob.wait_text(lambda _t: 803 in bob.awareness)
            await bob.wait_text(lambda _t: bob.awareness.get(803, "gone") is None)
            async with YjsPeer(server.url, ROOM, user="mallory") as mallory:
                await asyncio.wait_for(mallory.synced.wait(), 5)
                await mallory.set_awareness(777, 1000, {"posing": True})
                await mallory.set_awareness(778, 1, {"mallory's own": True})

                def posing() -> bool:
                    return bool((bob.awareness.get(777) or {}).get("posing"))

                # 778 is relayed after 777 would be; had mallory taken 777, 778 is not hers
                await bob.wait_text(lambda _t: 778 in bob.awareness or posing())
                assert not posing() and bob.awareness.get(777) is None
