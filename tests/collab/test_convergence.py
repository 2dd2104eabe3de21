"""Seeded randomized convergence, in the style of Yjs' own test helper.

5 to 20 clients make random edits through the real server while connections drop at random
and messages are lost in flight; after a final resync every client and the server hold the
same text, and every unique marker is there exactly once.
"""

from __future__ import annotations

import asyncio
import os
import random

import pytest

from collab import Client, CollabServer
from protocol import messages as m

ROOM = "demo/main:src/app.py"
SEEDS = int(os.environ.get("COLLAB_SEEDS", "10"))
MANY_SEEDS = int(os.environ.get("COLLAB_MANY_SEEDS", "60"))
FILLER = "."
GLYPHS = ["a", "é", "世", "🙂"]


class LossyClient(Client):
    """A client whose link loses updates in flight, both ways, while ``loss`` is set.

    As on a real network, where TCP never drops a frame from a live connection, a frame
    lost in flight is followed by the connection breaking; recovery is the reconnect's
    resync, not a retransmission.
    """

    def __init__(self, url: str, user: str, rng: random.Random, loss: float) -> None:
        super().__init__(url, user=user, min_backoff=0.01, max_backoff=0.1)
        self.rng = rng
        self.loss = loss
        self.dropped = 0

    def _lost(self, message: m.Message) -> bool:
        update = isinstance(message, m.Sync) and message.step is m.SyncStep.UPDATE
        if update and self.loss and self.rng.random() < self.loss:
            self.dropped += 1
            asyncio.get_running_loop().create_task(self.drop_connection())
            return True
        return False

    def send(self, message: m.Message) -> None:
        if not self._lost(message):
            super().send(message)

    def _receive(self, message: m.Message, welcomed: asyncio.Future[None]) -> None:
        if not self._lost(message):
            super()._receive(message, welcomed)


def _boundaries(text: str) -> list[int]:
    """Positions where a marker may go without splitting another one."""
    return [0] + [i + 1 for i, ch in enumerate(text) if ch in "];" + FILLER]


async def _run(server: CollabServer, seed: int) -> None:
    rng = random.Random(seed)
    count = rng.randint(5, 20)
    loss = rng.choice([0.0, 0.05, 0.2])
    clients = [
        LossyClient(server.url, f"user{i}", random.Random(seed * 1000 + i), loss)
        for i in range(count)
    ]
    for client in clients:
        await client.connect()
    try:
        docs = [await client.open(ROOM) for client in clients]
        markers: list[str] = []
        for step in range(rng.randint(60, 160)):
            who = rng.randrange(count)
            doc = docs[who]
            text = str(doc)
            action = rng.random()
            if action < 0.55:
                marker = f"[{rng.choice(GLYPHS)}{who}:{step}]"
                markers.append(marker)
                doc.insert(rng.choice(_boundaries(text)), marker)
            elif action < 0.7:
                doc.insert(rng.choice(_boundaries(text)), FILLER * rng.randint(1, 3))
            elif action < 0.8:
                dots = [i for i, ch in enumerate(text) if ch == FILLER]
                if dots:
                    doc.delete(rng.choice(dots), 1)
            elif action < 0.87:
                await clients[who].drop_connection()
            else:
                await asyncio.sleep(rng.random() * 0.01)
            if rng.random() < 0.3:
                await asyncio.sleep(0)
        # heal the network, resync everyone, and check
        for client in clients:
            client.loss = 0.0
        for client in clients:
            await client.drop_connection()
        async with asyncio.timeout(30):
            while True:
                await asyncio.sleep(0.05)
                if not all(c.connected.is_set() for c in clients):
                    continue
                texts = {str(doc) for doc in docs}
                room = server.rooms.get_key(ROOM)
                if len(texts) == 1 and room is not None and str(room.text) in texts:
                    break
        final = str(docs[0])
        for marker in markers:
            assert final.count(marker) == 1, (seed, marker)
        assert final.count("[") == len(markers)
        async with Client(server.url, user="late") as late:
            assert str(await late.open(ROOM)) == final
    finally:
        for client in clients:
            await client.close()


@pytest.mark.parametrize("seed", range(SEEDS))
async def test_random_edits_converge(server: CollabServer, seed: int) -> None:
    await _run(server, seed)


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("seed", range(SEEDS, SEEDS + MANY_SEEDS))
async def test_random_edits_converge_many_seeds(server: CollabServer, seed: int) -> None:
    await _run(server, seed)
