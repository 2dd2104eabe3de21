"""Epochs: every seeding of a document starts a new history, and copies of an old one reload.

A document's CRDT history starts with a seed, its text at the branch head. If the store loses
a document and it is seeded again, a client that still holds the old history must not merge
it into the new one: every line would be there twice. So each seed carries an epoch marker,
one character inserted and deleted at once (a tombstone, invisible in the text) by a client id
drawn for that seeding from a range no client uses: Yjs draws 32-bit ids, and the ids this
engine draws for its own documents (:func:`client_id`) stay below the range. The marker's id
is in the state vector of every copy of that history, so a peer whose state vector names an
epoch id the room's document lacks holds another history, and is told to reload.
"""

from __future__ import annotations

import secrets
from typing import Any

from pycrdt import Doc, Text, get_state, merge_updates

from protocol.yjs import DEFAULT_LIMITS, YjsLimits, decode_state_vector

from .seed import TEXT_NAME

__all__ = [
    "EPOCH_BASE",
    "client_id",
    "doc_epochs",
    "epochs_in",
    "foreign_epochs",
    "history_lost",
    "is_epoch",
    "new_epoch",
    "update_epochs",
    "with_epoch",
]

EPOCH_BASE = 2**53 - 2**24
"""The first epoch id; epoch ids fill the top 2**24 of the 53-bit ids Yjs can encode."""


def new_epoch() -> int:
    """A fresh epoch id."""
    return EPOCH_BASE + secrets.randbelow(2**24)


def is_epoch(client: int) -> bool:
    return EPOCH_BASE <= client < 2**53


def client_id() -> int:
    """A random client id for a document of this engine's own, below the epoch range."""
    return 1 + secrets.randbelow(EPOCH_BASE - 1)


def with_epoch(seed: bytes, epoch: int) -> bytes:
    """``seed`` followed by the marker of ``epoch``, as one update."""
    doc: Doc[Any] = Doc(client_id=epoch)
    doc.apply_update(seed)
    before = doc.get_state()
    text = doc.get(TEXT_NAME, type=Text)
    with doc.transaction():
        text.insert(0, "\n")
        del text[0:1]
    return merge_updates(seed, doc.get_update(before))


def epochs_in(state_vector: bytes, limits: YjsLimits = DEFAULT_LIMITS) -> frozenset[int]:
    """The epoch ids a state vector names. Raises ``ProtocolError`` if it is malformed."""
    clocks = decode_state_vector(state_vector, limits)
    return frozenset(client for client, clock in clocks.items() if clock and is_epoch(client))


def doc_epochs(doc: Doc[Any]) -> frozenset[int]:
    """The epoch ids ``doc``'s own history holds. Its state vector is not bounded as a
    peer's is: it takes a few bytes for each client that ever wrote in the document, and a
    document thousands of people edited (or one update naming thousands of client ids, as
    Yjs lets one) has a long one."""
    state = doc.get_state()
    return epochs_in(state, YjsLimits(max_state_vector=len(state)))


def foreign_epochs(
    state_vector: bytes, known: frozenset[int], limits: YjsLimits = DEFAULT_LIMITS
) -> frozenset[int]:
    """The epoch ids of ``state_vector`` that are not in ``known``."""
    return epochs_in(state_vector, limits) - known


def update_epochs(update: bytes) -> frozenset[int]:
    """The epoch ids whose history an update carries from its start (an old epoch's seed, in
    a peer's answer to the server's sync step 1)."""
    return epochs_in(get_state(update), YjsLimits(max_state_vector=len(update) + 16))


def history_lost(have: bytes, committed: bytes) -> bool:
    """Whether a document whose state vector is ``have`` lacks part of the history it had
    when its text was committed (state vector ``committed``, see
    ``gitsync.objects.synced_state``): its store lost edits its branch holds.

    A document seeded anew since (it holds an epoch the record does not name) is another
    history, seeded from the branch: nothing is lost."""
    limits = YjsLimits(max_state_vector=max(len(have), len(committed)) + 16)
    mine = decode_state_vector(have, limits)
    theirs = decode_state_vector(committed, limits)
    epochs = {client for client, clock in mine.items() if clock and is_epoch(client)}
    if not epochs <= {client for client, clock in theirs.items() if clock and is_epoch(client)}:
        return False
    return any(clock > mine.get(client, 0) for client, clock in theirs.items())
