"""A pack of chosen objects, streamed in pieces, made of the entries the repository's packs
already hold.

Nothing is inflated, deltified or compressed again where it need not be: each object's entry
is copied from its pack as it is, deltas included (git calls this pack reuse). Entries of one
pack are sent in that pack's order, so an offset delta's base comes before it; when everything
between a delta and its base is sent too, the entry is copied byte for byte, and when some of
it is not, only the delta's offset is written anew. A pack whose every object is sent is copied
whole. A delta whose base is not sent becomes a reference delta if the client has the base
and takes a thin pack, and is otherwise resolved and sent whole (zlib-compressed again), as
are objects found only in loose files or alternates. Clients that do not understand offset
deltas (``ofs-delta``) get reference deltas.

The pack is yielded in pieces of about :data:`PIECE` bytes, checksum last, so that a large
clone is never held in memory.
"""

from __future__ import annotations

import bisect
import hashlib
import struct
import zlib
from collections.abc import Iterable, Iterator

from .source import OFS_DELTA, REF_DELTA, Pack, StoredObjects, read_entry

__all__ = ["PIECE", "PackStats", "pack_pieces"]

PIECE = 1 << 18
"""Bytes gathered before a piece is yielded."""
COMPRESSION = 6
"""zlib level of objects sent whole (git's ``pack.compression`` default)."""


class PackStats:
    """What :func:`pack_pieces` sent: objects, objects copied as they were, objects resolved
    and compressed again, and whole packs copied."""

    def __init__(self) -> None:
        self.objects = 0
        self.reused = 0
        self.recompressed = 0
        self.whole_packs = 0
        self.bytes = 0


def _type_and_size(kind: int, size: int) -> bytes:
    out = bytearray()
    byte = (kind << 4) | (size & 15)
    size >>= 4
    while size:
        out.append(byte | 0x80)
        byte = size & 0x7F
        size >>= 7
    out.append(byte)
    return bytes(out)


def _offset_bytes(distance: int) -> bytes:
    out = [distance & 0x7F]
    distance >>= 7
    while distance:
        distance -= 1
        out.append(0x80 | (distance & 0x7F))
        distance >>= 7
    return bytes(reversed(out))


def _whole(kind: int, content: bytes) -> bytes:
    return _type_and_size(kind, len(content)) + zlib.compress(content, COMPRESSION)


class _Writer:
    def __init__(self) -> None:
        self.hash = hashlib.sha1()
        self.parts: list[bytes] = []
        self.size = 0
        self.offset = 0

    def add(self, data: bytes) -> None:
        self.parts.append(data)
        self.size += len(data)
        self.offset += len(data)

    def take(self) -> bytes:
        data = b"".join(self.parts)
        self.parts = []
        self.size = 0
        self.hash.update(data)
        return data


def pack_pieces(
    objects: StoredObjects,
    shas: Iterable[bytes],
    *,
    ofs_delta: bool = True,
    client_has: set[bytes] | frozenset[bytes] = frozenset(),
    thin: bool = False,
    stats: PackStats | None = None,
) -> Iterator[bytes]:
    """The pack of the (distinct) hex ids ``shas``, in pieces. With ``thin``, a delta may
    refer to a base in ``client_has`` that is not sent. Raises ``KeyError`` for an id the
    repository lacks (before anything is yielded)."""
    stats = stats if stats is not None else PackStats()
    chosen = list(dict.fromkeys(shas))
    selected: set[bytes] = set(chosen)
    by_pack: dict[int, list[int]] = {}
    loose: list[bytes] = []
    for sha in chosen:
        found = objects.find(sha)
        if found is None:
            loose.append(sha)
        else:
            by_pack.setdefault(found[0].number, []).append(found[1])
    resolved_loose = [(sha, *objects.raw(sha)) for sha in loose]  # (KeyError: missing)
    out = _Writer()
    out.add(b"PACK" + struct.pack(">LL", 2, len(chosen)))
    stats.objects = len(chosen)
    for pack in objects.packs:
        offsets = by_pack.get(pack.number)
        if not offsets:
            continue
        if len(offsets) == pack.index.count and ofs_delta:
            yield from _copy_whole(pack, out)
            stats.whole_packs += 1
            stats.reused += len(offsets)
            continue
        offsets.sort()
        yield from _copy_entries(
            objects, pack, offsets, selected, out, ofs_delta, thin, client_has, stats
        )
    for _sha, kind, content in resolved_loose:
        out.add(_whole(kind, content))
        stats.recompressed += 1
        if out.size >= PIECE:
            yield out.take()
    tail = out.take()
    checksum = out.hash.digest()
    stats.bytes = out.offset + len(checksum)
    yield tail + checksum


def _copy_whole(pack: Pack, out: _Writer) -> Iterator[bytes]:
    if out.size:
        yield out.take()
    for start in range(12, pack.end, PIECE):
        piece = pack.data[start : min(start + PIECE, pack.end)]
        out.add(piece)
        yield out.take()


def _copy_entries(
    objects: StoredObjects,
    pack: Pack,
    offsets: list[int],
    selected: set[bytes],
    out: _Writer,
    ofs_delta: bool,
    thin: bool,
    client_has: set[bytes] | frozenset[bytes],
    stats: PackStats,
) -> Iterator[bytes]:
    """The entries at ``offsets`` (ascending) of ``pack``."""
    order, ids = pack.index.by_offset()
    data = pack.data
    placed: dict[int, int] = {}
    """Offset in ``pack`` -> offset in the pack sent, of the entries sent so far."""
    at = bisect.bisect_left(order, offsets[0]) if offsets else 0
    for offset in offsets:
        while order[at] != offset:
            at += 1
        end = order[at + 1] if at + 1 < len(order) else pack.end
        new_offset = out.offset
        placed[offset] = new_offset
        entry = read_entry(data, offset)
        if entry.kind == OFS_DELTA:
            assert isinstance(entry.base, int)
            base_new = placed.get(entry.base)
            if base_new is not None and ofs_delta:
                if new_offset - base_new == offset - entry.base:
                    out.add(data[offset:end])
                else:
                    head = _type_and_size(OFS_DELTA, entry.size)
                    out.add(
                        head + _offset_bytes(new_offset - base_new) + data[entry.data_start : end]
                    )
                stats.reused += 1
            else:
                base_id = ids[entry.base]
                if base_new is not None or (thin and base_id in client_has):
                    head = _type_and_size(REF_DELTA, entry.size) + bytes.fromhex(base_id.decode())
                    out.add(head + data[entry.data_start : end])
                    stats.reused += 1
                else:
                    out.add(_whole(*objects.unpack(pack, offset)))
                    stats.recompressed += 1
        elif entry.kind == REF_DELTA:
            assert isinstance(entry.base, bytes)
            if entry.base in selected or (thin and entry.base in client_has):
                out.add(data[offset:end])
                stats.reused += 1
            else:
                out.add(_whole(*objects.unpack(pack, offset)))
                stats.recompressed += 1
        else:
            out.add(data[offset:end])
            stats.reused += 1
        if out.size >= PIECE:
            yield out.take()
