"""Marks: a live document records, in its own history, which commits were merged into it.

When the branch of a document moves outside the engine (a push), the change is merged into
the document, then the new commit is recorded as the branch's synced one (a ref). A crash
between the two would have the change merged again on restart: every line of it twice.
So the merge's edit carries a mark, in the same update, stored at once with it: one
character inserted and deleted (a tombstone, invisible in the text) by a client id derived
from the commit and the path. A document whose state vector names the mark holds the
merge; it is not merged again.

Mark ids are drawn from the ids from 2**52 up to the epochs' (see
:mod:`collab.live.epochs`): as wide a range as can be, so that two commits merged into one
document never share one. Clients may draw ids there too (pycrdt draws 53-bit ones); one
that drew a mark's id exactly, one chance in 2**52, would make that merge be skipped. A
writer who forged a mark could do no more than a writer can anyway: change the text.
"""

from __future__ import annotations

import hashlib
from typing import Any

from pycrdt import Doc, Text

from protocol.yjs import DEFAULT_LIMITS, YjsLimits, decode_state_vector

from .epochs import EPOCH_BASE
from .seed import TEXT_NAME

__all__ = ["MARK_BASE", "is_mark", "mark_id", "mark_update", "marks_in"]

MARK_BASE = 2**52
"""The first mark id."""


def mark_id(commit: bytes, path: str) -> int:
    """The mark of commit ``commit`` (hex id) merged into the document of ``path``."""
    digest = hashlib.sha256(b"collab-mark\x00" + commit + b"\x00" + path.encode()).digest()
    return MARK_BASE + int.from_bytes(digest[:8], "big") % (EPOCH_BASE - MARK_BASE)


def is_mark(client: int) -> bool:
    return MARK_BASE <= client < EPOCH_BASE


def marks_in(state_vector: bytes, limits: YjsLimits = DEFAULT_LIMITS) -> frozenset[int]:
    """The mark ids a state vector names."""
    clocks = decode_state_vector(state_vector, limits)
    return frozenset(client for client, clock in clocks.items() if clock and is_mark(client))


def mark_update(doc: Doc[Any], mark: int) -> bytes:
    """The update that puts ``mark`` into ``doc``'s history (made on a copy: ``doc`` is not
    changed; apply the update to it)."""
    copy: Doc[Any] = Doc(client_id=mark)
    copy.apply_update(doc.get_update())
    before = copy.get_state()
    text = copy.get(TEXT_NAME, type=Text)
    with copy.transaction():
        text.insert(0, "\n")
        del text[0:1]
    return copy.get_update(before)
