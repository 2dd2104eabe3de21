"""Deterministic seeding: the same blob always becomes the same CRDT state."""

from __future__ import annotations

import hashlib
from typing import Any

from pycrdt import Doc, Text

__all__ = ["TEXT_NAME", "seed_client_id", "seed_update"]

TEXT_NAME = "source"  # the root Y.Text holding a file's content


def seed_client_id(blob_sha: bytes | None) -> int:
    """A fixed 32-bit Yjs client id derived from the blob (clients use random ones)."""
    digest = hashlib.sha256(b"collab-seed\x00" + (blob_sha or b"")).digest()
    return int.from_bytes(digest[:4], "big") or 1


def seed_update(blob_sha: bytes | None, text: str) -> bytes:
    """Encode ``text`` as the update a seeding client with a fixed id would produce."""
    doc: Doc[Any] = Doc(client_id=seed_client_id(blob_sha))
    source = doc.get(TEXT_NAME, type=Text)
    if text:
        source += text
    return doc.get_update()
