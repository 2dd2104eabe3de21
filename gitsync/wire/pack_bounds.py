"""What a pushed pack expands to, bounded before it is indexed.

A pack is small for what it holds: a run of zeros compresses a thousandfold, and a delta of
copy instructions repeats its base as often as it likes, so a push of a few kilobytes can
declare objects of gigabytes. Indexing a pack expands every object in memory (its id is the
hash of the whole), so the sizes are read first, from the objects' headers: a whole object
states its size before its data, and a delta states the size of its result in its first
bytes. The data is inflated once, in bounded pieces and dropped, only to find where each
object ends; nothing is inflated past what its header declared.
"""

from __future__ import annotations

import zlib
from typing import IO

from ..packs.read import delta_sizes

__all__ = ["PackRefused", "check_pack_bounds"]

_OFS_DELTA, _REF_DELTA = 6, 7
_BLOCK = 1 << 20  # bytes read from the stream at a time
_PIECE = 1 << 16  # bytes inflated at a time


class PackRefused(ValueError):
    """The pack is refused before it is indexed: an object over a bound, or a pack that
    does not read as one (git would refuse it too)."""


class _Reader:
    """A stream read in blocks, with a position of its own inside the block held."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.buffer = b""
        self.at = 0
        self.dropped = 0  # bytes read before the buffer's start

    @property
    def position(self) -> int:
        return self.dropped + self.at

    def fill(self) -> bool:
        """Drop what was read and read the next block; False at the end of the stream."""
        self.dropped += self.at
        self.buffer = self.buffer[self.at :] + self.stream.read(_BLOCK)
        self.at = 0
        return bool(self.buffer)

    def take(self, count: int) -> bytes:
        while len(self.buffer) - self.at < count:
            if not self.fill() or len(self.buffer) < count:
                raise PackRefused("the pack ends inside an object")
        piece = self.buffer[self.at : self.at + count]
        self.at += count
        return piece

    def size(self, byte: int, bits: int) -> int:
        """A size in git's pack encoding, low bits first, whose first byte ``byte`` (read
        already) holds its lowest ``bits`` bits; the bytes after it, seven bits each, follow
        while the one before has its high bit set."""
        value, shift = byte & ((1 << bits) - 1), bits
        while byte & 0x80:
            byte = self.take(1)[0]
            value |= (byte & 0x7F) << shift
            shift += 7
            if shift > 70:
                raise PackRefused("a size too long to be one")
        return value

    def inflate(self, declared: int, keep: int = 0) -> bytes:
        """Inflate the zlib stream at the position, checking that it holds ``declared``
        bytes; the first ``keep`` of them are returned, the rest dropped as they come."""
        inflater = zlib.decompressobj()
        kept = b""
        produced = 0
        while not inflater.eof:
            if self.at >= len(self.buffer) and not self.fill():
                raise PackRefused("the pack ends inside an object's data")
            data = memoryview(self.buffer)[self.at : self.at + _PIECE]
            try:
                out = inflater.decompress(data, _PIECE)
            except zlib.error as exc:
                raise PackRefused(f"an object's data does not inflate: {exc}") from None
            left = inflater.unused_data if inflater.eof else inflater.unconsumed_tail
            consumed = len(data) - len(left)
            self.at += consumed
            produced += len(out)
            if produced > declared:
                raise PackRefused("an object's data is larger than its header says")
            if len(kept) < keep:
                kept += out[: keep - len(kept)]
        if produced != declared:
            raise PackRefused("an object's data is smaller than its header says")
        return kept


def check_pack_bounds(stream: IO[bytes], *, max_object: int, max_total: int) -> int:
    """Read the pack at ``stream``'s position and raise :class:`PackRefused` if one of its
    objects, expanded (a delta: its result), is over ``max_object`` bytes, or all of them
    together over ``max_total``, or it does not read as a pack; else return how many bytes
    its header and objects take (its trailer follows). The stream is read ahead, in
    blocks: the caller seeks back to index the pack."""
    reader = _Reader(stream)
    header = reader.take(12)
    if header[:4] != b"PACK" or int.from_bytes(header[4:8], "big") not in (2, 3):
        raise PackRefused("not a pack of version 2 or 3")
    total = 0
    for _ in range(int.from_bytes(header[8:12], "big")):
        first = reader.take(1)[0]
        kind = (first >> 4) & 7
        size = reader.size(first, 4)
        if kind == _OFS_DELTA:  # the base's offset (in an encoding of its own: skipped)
            reader.size(reader.take(1)[0], 7)
        elif kind == _REF_DELTA:  # the base's id
            reader.take(20)
        elif kind not in (1, 2, 3, 4):
            raise PackRefused(f"an object of unknown type {kind}")
        if size > max_object:
            raise PackRefused(f"an object of {size} bytes, over the limit of {max_object}")
        if kind in (_OFS_DELTA, _REF_DELTA):
            try:
                _base, result = delta_sizes(reader.inflate(size, keep=20))
            except ValueError as exc:
                raise PackRefused(str(exc)) from None
            if result > max_object:
                raise PackRefused(
                    f"a delta whose result is {result} bytes, over the limit of {max_object}"
                )
            size = result
        else:
            reader.inflate(size)
        total += size
        if total > max_total:
            raise PackRefused(f"objects of more than {max_total} bytes in all, expanded")
    return reader.position
