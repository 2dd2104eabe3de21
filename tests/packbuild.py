"""Git packs built by hand, for the tests of what a push may hold: objects whose headers
and data say what a test needs, deltas that copy their base over and over."""

from __future__ import annotations

import hashlib
import zlib

__all__ = ["BLOB", "MIB", "REF_DELTA", "blob", "copies_of", "delta_size", "object_header", "pack"]

MIB = 1 << 20
BLOB, REF_DELTA = 3, 7


def object_header(kind: int, size: int) -> bytes:
    """A pack object's type and size: four bits of the size in the first byte, then seven
    per byte, low bits first."""
    out = bytearray()
    byte = (kind << 4) | (size & 0x0F)
    size >>= 4
    while size:
        out.append(byte | 0x80)
        byte = size & 0x7F
        size >>= 7
    out.append(byte)
    return bytes(out)


def delta_size(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)
    return bytes(out)


def pack(*objects: bytes) -> bytes:
    body = b"PACK" + (2).to_bytes(4, "big") + len(objects).to_bytes(4, "big") + b"".join(objects)
    return body + hashlib.sha1(body).digest()


def blob(data: bytes, declared: int | None = None) -> bytes:
    return object_header(BLOB, len(data) if declared is None else declared) + zlib.compress(data)


def copies_of(base: bytes, times: int) -> bytes:
    """A delta against ``base`` whose result is ``base`` ``times`` over: each copy
    instruction takes the whole base (1 MiB: one size byte, its third)."""
    assert len(base) == MIB
    instructions = bytes([0x80 | 0x40, 0x10]) * times
    data = delta_size(len(base)) + delta_size(times * len(base)) + instructions
    base_id = hashlib.sha1(b"blob %d\0" % len(base) + base).digest()
    return object_header(REF_DELTA, len(data)) + base_id + zlib.compress(data)
