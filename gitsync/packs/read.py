"""Fast raw object reads for merges: packs and their indexes memory-mapped, read directly.

A merge of many files reads thousands of objects, so this reader maps each pack and its
version-2 index once and does the lookup, the zlib inflate and the delta resolution itself
(the delta application is dulwich's compiled ``apply_delta``). Anything it does not understand
(an older index version, an object missing from every pack) is left to dulwich.

Why not dulwich's ``get_raw`` (1.2.21): planning a merge of 1,000 files a side in a repository
of 10,000 takes 17 ms with this reader and 29 ms with ``get_raw``, the repository open and
warm; the 1,679 merges of psf/requests' history take the same time with either. Reading each
of that history's 27,121 objects once, ``get_raw`` is as fast or faster (0.71 s to 0.82 s at
best), but that is not what merges do (``tests/bench/dulwich_reuse.py``, a 2-core machine).
"""

from __future__ import annotations

import mmap
import os
import struct
import zlib
from collections.abc import Iterable

from dulwich.object_store import DiskObjectStore
from dulwich.objects import ObjectID, hex_to_sha
from dulwich.pack import Pack, PackFileDisappeared, apply_delta

__all__ = ["ObjectReader", "delta_sizes", "inflate_head"]

_IDX_MAGIC = b"\377tOc"
_OFS_DELTA, _REF_DELTA = 6, 7
_DELTA_CACHE = 256
"""Delta bases kept per reader: the blobs of one merge often share their bases."""


class _PackFile:
    """One pack and its version-2 index, memory-mapped."""

    def __init__(self, pack: Pack) -> None:
        self.pack = pack
        self.maps: list[mmap.mmap] = []
        idx = self._map(pack._idx_path)
        if idx[:4] != _IDX_MAGIC or struct.unpack_from(">L", idx, 4)[0] != 2:
            raise ValueError("not a version-2 pack index")
        self.idx = idx
        self.fanout = struct.unpack_from(">256L", idx, 8)
        self.count = self.fanout[255]
        self.names = 8 + 256 * 4
        self.offsets = self.names + self.count * (20 + 4)
        self.large = self.offsets + self.count * 4
        self.data = self._map(pack._data_path)
        self.view = memoryview(self.data)

    def _map(self, path: str) -> mmap.mmap:
        with open(path, "rb") as f:
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self.maps.append(mapped)
        return mapped

    def offset(self, sha: bytes) -> int | None:
        """The pack offset of binary id ``sha``, or None if the pack lacks it."""
        first = sha[0]
        lo = self.fanout[first - 1] if first else 0
        hi = self.fanout[first]
        idx, names = self.idx, self.names
        while lo < hi:
            mid = (lo + hi) // 2
            at = names + mid * 20
            probe = idx[at : at + 20]
            if probe < sha:
                lo = mid + 1
            elif probe > sha:
                hi = mid
            else:
                offset: int = struct.unpack_from(">L", idx, self.offsets + mid * 4)[0]
                if offset & 0x80000000:
                    offset = struct.unpack_from(">Q", idx, self.large + (offset & 0x7FFFFFFF) * 8)[
                        0
                    ]
                return offset
        return None

    def close(self) -> None:
        self.view.release()
        for mapped in self.maps:
            mapped.close()


class ObjectReader:
    """Reads raw object contents (without the type header) from one object store.

    Not thread-safe; meant for one batch of reads (one merge). Call :meth:`close` when done.
    """

    def __init__(self, store: DiskObjectStore) -> None:
        self.store = store
        self.loose = str(store.path)
        self.packs: list[_PackFile] = []
        self.slow: list[Pack] = []
        for pack in store.packs:
            try:
                self.packs.append(_PackFile(pack))
            except FileNotFoundError:
                continue  # combined into another pack meanwhile (see gitsync.packs.write)
            except (ValueError, OSError):
                self.slow.append(pack)
        self.bases: dict[tuple[int, int], tuple[int, bytes]] = {}

    def raw(self, hex_id: bytes) -> bytes:
        """The content of object ``hex_id``; KeyError if the store lacks it."""
        sha = hex_to_sha(ObjectID(hex_id))
        for index, pack in enumerate(self.packs):
            offset = pack.offset(sha)
            if offset is not None:
                return self._unpack(index, offset)[1]
        for slow in self.slow:
            try:
                return _joined(slow.get_raw(ObjectID(hex_id))[1])
            except (KeyError, PackFileDisappeared):
                continue
        name = hex_id.decode("ascii")
        try:
            with open(os.path.join(self.loose, name[:2], name[2:]), "rb") as f:
                return zlib.decompress(f.read()).partition(b"\0")[2]
        except FileNotFoundError:
            pass
        return _joined(self.store.get_raw(ObjectID(hex_id))[1])  # a pack added since

    def has(self, hex_id: bytes) -> bool:
        """Whether the store holds object ``hex_id``, in a pack this reader has open or
        loose (a pack added since is not looked at)."""
        sha = hex_to_sha(ObjectID(hex_id))
        if any(pack.offset(sha) is not None for pack in self.packs):
            return True
        if any(ObjectID(hex_id) in slow for slow in self.slow):
            return True
        name = hex_id.decode("ascii")
        return os.path.exists(os.path.join(self.loose, name[:2], name[2:]))

    def _unpack(self, index: int, offset: int) -> tuple[int, bytes]:
        """(type number, content) of the object at ``offset`` of pack ``index``."""
        cached = self.bases.get((index, offset))
        if cached is not None:
            return cached
        pack = self.packs[index]
        data = pack.data
        pos = offset
        byte = data[pos]
        kind = (byte >> 4) & 7
        size = byte & 15
        shift = 4
        while byte & 0x80:
            pos += 1
            byte = data[pos]
            size |= (byte & 0x7F) << shift
            shift += 7
        pos += 1
        if kind == _OFS_DELTA:
            byte = data[pos]
            pos += 1
            back = byte & 0x7F
            while byte & 0x80:
                byte = data[pos]
                pos += 1
                back = ((back + 1) << 7) | (byte & 0x7F)
            base_kind, base = self._unpack(index, offset - back)
        elif kind == _REF_DELTA:
            base_sha = bytes(data[pos : pos + 20])
            pos += 20
            base_offset = pack.offset(base_sha)
            if base_offset is None:
                raise KeyError(base_sha)
            base_kind, base = self._unpack(index, base_offset)
        else:
            return kind, _inflate(pack.view, pos, size)
        result = base_kind, _joined(apply_delta(base, _inflate(pack.view, pos, size)))
        if len(self.bases) >= _DELTA_CACHE:
            self.bases.clear()
        self.bases[(index, offset)] = result
        return result

    def close(self) -> None:
        self.bases.clear()
        for pack in self.packs:
            pack.close()
        self.packs.clear()


def inflate_head(chunks: Iterable[bytes | memoryview], want: int) -> bytes:
    """The first ``want`` bytes that the zlib stream read from ``chunks`` inflates to (all of
    them, if it inflates to fewer): as many chunks are read as that takes, however the
    stream's blocks are laid out (a block's header alone may be longer than a chunk)."""
    inflater = zlib.decompressobj()
    out = b""
    for chunk in chunks:
        out += inflater.decompress(inflater.unconsumed_tail + chunk, want - len(out))
        if len(out) >= want or inflater.eof:
            break
    return out


def delta_sizes(head: bytes) -> tuple[int, int]:
    """The sizes of a delta's base and result, which its data starts with (``head``: its
    first bytes, inflated); ``ValueError`` if they are not whole there."""
    values = []
    at = 0
    for _ in range(2):
        value = shift = 0
        while True:
            if at >= len(head):
                raise ValueError("a delta too short to state its sizes")
            byte = head[at]
            at += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
            if shift > 70:
                raise ValueError("a delta's size is too long to be one")
        values.append(value)
    return values[0], values[1]


def _inflate(view: memoryview, pos: int, size: int) -> bytes:
    """The ``size`` bytes that the zlib stream at ``pos`` inflates to."""
    inflater = zlib.decompressobj()
    chunk = size + 64
    out = inflater.decompress(view[pos : pos + chunk], size)
    while not inflater.eof and len(out) < size:
        pos += chunk
        chunk *= 2
        more = view[pos : pos + chunk]
        if not more:
            raise ValueError("truncated pack object")
        out += inflater.decompress(inflater.unconsumed_tail + more, size - len(out))
    if len(out) != size:
        raise ValueError("pack object size mismatch")
    return out


def _joined(chunks: bytes | Iterable[bytes]) -> bytes:
    return chunks if isinstance(chunks, bytes) else b"".join(chunks)
