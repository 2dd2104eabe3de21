"""The Python client frees what it no longer uses: a long-running embedder that opens and
closes documents, or clients, does not keep them all."""

from __future__ import annotations

import gc

from collab import Client, CollabServer
from collab.client import Document


def _alive() -> int:
    gc.collect()
    # (type, not isinstance: that reads ``__class__``, which some modules' lazy objects
    # answer with a deprecation warning)
    return sum(1 for thing in gc.get_objects() if type(thing) is Document)


async def test_documents_are_freed_once_closed_forgotten_or_their_client_closed(
    server: CollabServer,
) -> None:
    before = _alive()
    async with Client(server.url, user="ann") as client:
        for n in range(20):
            doc = await client.open(f"demo/main:closed{n}.txt")
            doc.insert(0, "x")
            await doc.close()
        for n in range(20):
            client.forget(await client.open(f"demo/main:forgotten{n}.txt"))
        del doc
        assert _alive() == before
        kept = await client.open("demo/main:kept.txt")
        for n in range(20):
            await client.open(f"demo/main:left-open{n}.txt")
    assert str(kept.text) == ""  # a document held after its client closed stays readable
    del client, kept
    assert _alive() == before
