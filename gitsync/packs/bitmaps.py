"""git's reachability bitmaps (``pack-<hash>.bitmap``), read to know what a commit reaches
without walking its trees.

``git gc`` and ``git repack -a -d`` on a bare repository write, beside the pack, a bitmap for
many of its commits (the heads among them): bit ``n`` set means the ``n``-th object of the pack
(in pack order, by offset) is reachable from that commit. A repository imported with git, or
packed by git's maintenance, thus already holds the answer to "what do these refs reach" for
most of its history; :func:`bitmap_reach` gives it for a set of commits, so that the set a clone
sends is known in milliseconds where a walk of a 10,000-file history takes a fifth of a second.
Commits made since (continuous commits, pushes) are not in the bitmap: the caller walks them,
down to commits it covers (:mod:`gitsync.wire.reachable`).

The format is git's ``Documentation/technical/bitmap-format.txt`` (version 1, the pack's own
bitmap; a multi-pack index's bitmap is not read): a header, four EWAH-compressed bitmaps of the
objects of each type, then one entry per commit (its position in the pack's index, an XOR
offset to an earlier entry whose bitmap it is XORed with, flags, its EWAH bitmap). Bitmaps are
decoded into Python integers, one bit per object.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from .source import Pack

__all__ = ["BitmapError", "PackBitmap", "bitmap_for"]

_MAGIC = b"BITM"
_FULL_DAG = 0x1
_WORD = (1 << 64) - 1
MAX_XOR_CHAIN = 160 * 64
"""Entries followed through XOR offsets before the file is taken to be damaged."""


class BitmapError(ValueError):
    """A bitmap file this reader does not understand, or one that does not match its pack."""


def _ewah(data: bytes, pos: int) -> tuple[int, int]:
    """(the bits, the position after it) of the EWAH bitmap at ``pos``."""
    try:
        _bits, count = struct.unpack_from(">II", data, pos)
        words = struct.unpack_from(f">{count}Q", data, pos + 8)
    except struct.error:
        raise BitmapError("a bitmap runs past the end of the file") from None
    out: list[int] = []
    i = 0
    while i < count:
        marker = words[i]
        i += 1
        run = (marker >> 1) & 0xFFFFFFFF
        literals = marker >> 33
        if run:
            out.extend([_WORD if marker & 1 else 0] * run)
        out.extend(words[i : i + literals])
        i += literals
    value = int.from_bytes(struct.pack(f"<{len(out)}Q", *out), "little") if out else 0
    return value, pos + 8 + 8 * count + 4


def _skip_ewah(data: bytes, pos: int) -> int:
    try:
        count: int = struct.unpack_from(">I", data, pos + 4)[0]
    except struct.error:
        raise BitmapError("a bitmap runs past the end of the file") from None
    return pos + 8 + 8 * count + 4


@dataclass(frozen=True, slots=True)
class _Entry:
    xor: int
    """The index of the entry this one is XORed with; -1 for none."""
    start: int
    """Where its EWAH bitmap starts in the file."""


class PackBitmap:
    """The bitmaps of one pack: :meth:`reach` of a commit, :meth:`ids` of a bit set."""

    def __init__(self, pack: Pack, data: bytes) -> None:
        self.pack = pack
        if data[:4] != _MAGIC or len(data) < 32:
            raise BitmapError("not a bitmap file")
        version, flags, count = struct.unpack_from(">HHI", data, 4)
        if version != 1 or not flags & _FULL_DAG:
            raise BitmapError(f"bitmap version {version}, flags {flags:#x}: not understood")
        if data[12:32] != pack.data[-20:]:
            raise BitmapError("the bitmap belongs to another pack")
        pos = 32
        self.types: list[int] = []
        for _ in range(4):  # commits, trees, blobs, tags
            bits, pos = _ewah(data, pos)
            self.types.append(bits)
        self.data = data
        self.entries: dict[bytes, int] = {}
        """Commit -> the index of its entry."""
        order: list[_Entry] = []
        for i in range(count):
            try:
                position, xor, _flags = struct.unpack_from(">IBB", data, pos)
            except struct.error:
                raise BitmapError("the bitmap's entries run past the end of the file") from None
            if xor > i or position >= pack.index.count:
                raise BitmapError("a bitmap entry refers to nothing")
            order.append(_Entry(i - xor if xor else -1, pos + 6))
            self.entries[pack.index.id_at(position)] = i
            pos = _skip_ewah(data, pos + 6)
        self._order = order
        self._decoded: dict[int, int] = {}

    def covers(self, commit: bytes) -> bool:
        return commit in self.entries

    def reach(self, commit: bytes) -> int:
        """The objects ``commit`` reaches, as bits in pack order (KeyError if no bitmap)."""
        index = self.entries[commit]
        chain: list[int] = []
        while index >= 0 and index not in self._decoded:
            chain.append(index)
            index = self._order[index].xor
            if len(chain) > MAX_XOR_CHAIN:
                raise BitmapError("a bitmap's XOR chain does not end")
        bits = self._decoded.get(index, 0) if index >= 0 else 0
        for one in reversed(chain):
            own, _ = _ewah(self.data, self._order[one].start)
            bits ^= own
            self._decoded[one] = bits
        return bits

    def ids(self, bits: int) -> dict[int, list[bytes]]:
        """The hex ids of the objects in ``bits``, by type (1-4)."""
        order, ids = self.pack.index.by_offset()
        out: dict[int, list[bytes]] = {}
        for kind, of_kind in zip((1, 2, 3, 4), self.types, strict=True):
            chosen = bits & of_kind
            if not chosen:
                continue
            flags = bin(chosen)[:1:-1]  # (bit 0 first)
            out[kind] = [ids[order[n]] for n, flag in enumerate(flags) if flag == "1"]
        return out


def bitmap_for(packs: list[Pack]) -> PackBitmap | None:
    """The bitmap of one of ``packs`` (the first that has a readable one), or None."""
    for pack in packs:
        path = pack.path[: -len(".pack")] + ".bitmap"
        if not os.path.exists(path):
            continue
        try:
            with open(path, "rb") as f:
                return PackBitmap(pack, f.read())
        except (OSError, BitmapError):
            continue
    return None
