"""A repository's stored objects as a fetch reads them: where each one is, its type, its
content, and the bytes of its pack entry, to be copied into the pack a client is sent.

Every pack is memory-mapped with its version-2 index when a :class:`StoredObjects` is opened;
a pack that a combination of small packs (:mod:`gitsync.packs.write`) removes meanwhile stays
readable through its mapping. Each index is read once into a dictionary from hex id to offset
and kept (packs never change; :data:`INDEX_CACHE_ENTRIES` entries at most, least recently used
first out), so that locating the 20,000 objects of a clone costs milliseconds. Objects not in
a pack are read from their loose files, then from the repository's alternates (through
dulwich).

Delta chains are resolved here (dulwich's compiled ``apply_delta`` applies each delta), with
the resolved bases kept while they fit in :data:`BASE_CACHE_BYTES`: a walk of a history's
trees reads them in the order git packed them, each a delta of the one before.
"""

from __future__ import annotations

import binascii
import collections
import contextlib
import mmap
import os
import struct
import threading
import zlib
from dataclasses import dataclass

from dulwich.object_store import DiskObjectStore
from dulwich.objects import ObjectID
from dulwich.pack import apply_delta

from .read import delta_sizes, inflate_head

__all__ = [
    "BLOB",
    "COMMIT",
    "OFS_DELTA",
    "REF_DELTA",
    "TAG",
    "TREE",
    "Entry",
    "Pack",
    "StoredObjects",
]

COMMIT, TREE, BLOB, TAG = 1, 2, 3, 4
OFS_DELTA, REF_DELTA = 6, 7
TYPE_NAMES = {b"commit": COMMIT, b"tree": TREE, b"blob": BLOB, b"tag": TAG}
INDEX_CACHE_ENTRIES = 2_000_000
"""Index entries (objects) kept across requests, all packs together."""
BASE_CACHE_BYTES = 64 << 20
"""Resolved delta bases kept by one :class:`StoredObjects`."""
MAX_CHAIN = 10_000
"""Deltas followed before a chain is taken to be broken (git writes chains of at most 50)."""
OPEN_ATTEMPTS = 5
"""Listings of the pack directory tried while packs are combined under them."""
_IDX_MAGIC = b"\377tOc"


class _Index:
    """One pack's index: hex id -> offset, the ids in the index's order (``hexes``, 40 bytes
    each), and (made when first needed) the entries' order in the pack."""

    __slots__ = ("_by_offset", "count", "hexes", "offsets", "pack_size")

    def __init__(self, offsets: dict[bytes, int], hexes: bytes, pack_size: int) -> None:
        self.offsets = offsets
        self.hexes = hexes
        self.count = len(offsets)
        self.pack_size = pack_size
        self._by_offset: tuple[list[int], dict[int, bytes]] | None = None

    def id_at(self, position: int) -> bytes:
        """The hex id at ``position`` in the index (ids sorted)."""
        return self.hexes[position * 40 : position * 40 + 40]

    def by_offset(self) -> tuple[list[int], dict[int, bytes]]:
        """The entries' offsets in pack order, and offset -> hex id."""
        if self._by_offset is None:
            ids = {offset: sha for sha, offset in self.offsets.items()}
            self._by_offset = sorted(ids), ids
        return self._by_offset


def _read_index(path: str, pack_size: int) -> _Index:
    with open(path, "rb") as f:
        idx = f.read()
    if idx[:4] != _IDX_MAGIC or struct.unpack_from(">L", idx, 4)[0] != 2:
        raise ValueError(f"{path}: not a version-2 pack index")
    count = struct.unpack_from(">L", idx, 8 + 255 * 4)[0]
    names = 8 + 256 * 4
    small = names + count * (20 + 4)
    large = small + count * 4
    hexes = binascii.hexlify(idx[names : names + count * 20])
    raw_offsets = struct.unpack_from(f">{count}L", idx, small)
    offsets: dict[bytes, int] = {}
    for i, offset in enumerate(raw_offsets):
        if offset & 0x80000000:
            offset = struct.unpack_from(">Q", idx, large + (offset & 0x7FFFFFFF) * 8)[0]
        offsets[hexes[i * 40 : i * 40 + 40]] = offset
    return _Index(offsets, hexes, pack_size)


_cache: collections.OrderedDict[tuple[str, int, int], _Index] = collections.OrderedDict()
_cache_entries = 0
_cache_lock = threading.Lock()


def _index(path: str, pack_size: int) -> _Index:
    """The index at ``path``, from the cache when this very file was read before."""
    global _cache_entries
    stat = os.stat(path)
    key = (path, stat.st_size, stat.st_mtime_ns)
    with _cache_lock:
        found = _cache.get(key)
        if found is not None:
            _cache.move_to_end(key)
            return found
    index = _read_index(path, pack_size)
    with _cache_lock:
        if key not in _cache:
            _cache[key] = index
            _cache_entries += index.count
        while _cache_entries > INDEX_CACHE_ENTRIES and len(_cache) > 1:
            _, dropped = _cache.popitem(last=False)
            _cache_entries -= dropped.count
    return index


class Pack:
    """One pack, mapped, with its index."""

    def __init__(self, path: str, number: int) -> None:
        self.path = path
        self.number = number
        with open(path, "rb") as f:
            self.data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            if self.data[:4] != b"PACK" or struct.unpack_from(">L", self.data, 4)[0] not in (2, 3):
                raise ValueError(f"{path}: not a pack")
            self.index = _index(path[: -len(".pack")] + ".idx", len(self.data))
            if struct.unpack_from(">L", self.data, 8)[0] != self.index.count:
                raise ValueError(f"{path}: the pack and its index disagree")
        except BaseException:
            self.data.close()
            raise
        self.view = memoryview(self.data)
        self.end = len(self.data) - 20
        """Where the entries end (the checksum follows)."""

    def close(self) -> None:
        self.view.release()
        self.data.close()


@dataclass(frozen=True, slots=True)
class Entry:
    """The header of a pack entry: its kind (1-4, or a delta), the size written in it (the
    object's, or a delta's), where its zlib data starts, and a delta's base (an offset in the
    same pack for an offset delta, a hex id for a reference delta)."""

    kind: int
    size: int
    data_start: int
    base: int | bytes | None


def read_entry(data: mmap.mmap, offset: int) -> Entry:
    byte = data[offset]
    kind = (byte >> 4) & 7
    size = byte & 15
    shift = 4
    pos = offset + 1
    while byte & 0x80:
        byte = data[pos]
        pos += 1
        size |= (byte & 0x7F) << shift
        shift += 7
    base: int | bytes | None = None
    if kind == OFS_DELTA:
        byte = data[pos]
        pos += 1
        back = byte & 0x7F
        while byte & 0x80:
            byte = data[pos]
            pos += 1
            back = ((back + 1) << 7) | (byte & 0x7F)
        base = offset - back
    elif kind == REF_DELTA:
        base = binascii.hexlify(data[pos : pos + 20])
        pos += 20
    return Entry(kind, size, pos, base)


class StoredObjects:
    """The objects of one repository's object directory, for one request (not thread-safe);
    :meth:`close` when done. Opening lists and maps the packs there are at that moment."""

    def __init__(self, store: DiskObjectStore) -> None:
        self.store = store
        self.loose = os.path.abspath(str(store.path))
        self.packs: list[Pack] = []
        self.alternates = os.path.exists(os.path.join(self.loose, "info", "alternates"))
        """Whether other object directories lend objects (dulwich reads those)."""
        self._bases: dict[tuple[int, int], tuple[int, bytes]] = {}
        self._base_bytes = 0
        for attempt in range(OPEN_ATTEMPTS):
            try:
                self.packs = self._open_packs()
                break
            except FileNotFoundError:  # a pack combined away between the listing and the open
                if attempt == OPEN_ATTEMPTS - 1:
                    raise

    def _open_packs(self) -> list[Pack]:
        pack_dir = os.path.join(self.loose, "pack")
        try:
            names = sorted(os.listdir(pack_dir))
        except FileNotFoundError:
            return []
        packs: list[Pack] = []
        try:
            for name in names:
                if not name.endswith(".pack"):
                    continue
                path = os.path.join(pack_dir, name)
                if not os.path.exists(path[: -len(".pack")] + ".idx"):
                    continue  # (being written: a pack is visible only with its index)
                try:
                    packs.append(Pack(path, len(packs)))
                except ValueError:
                    continue  # (left to dulwich, through the store)
        except BaseException:
            for pack in packs:
                pack.close()
            raise
        # the largest first: a clone's objects are mostly there
        packs.sort(key=lambda pack: -pack.index.count)
        for number, pack in enumerate(packs):
            pack.number = number
        return packs

    def close(self) -> None:
        self._bases.clear()
        for pack in self.packs:
            pack.close()
        self.packs = []

    def __enter__(self) -> StoredObjects:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- where objects are ----------------------------------------------------------------

    def find(self, sha: bytes) -> tuple[Pack, int] | None:
        """The pack holding hex id ``sha`` and the offset of its entry; None if none does."""
        for pack in self.packs:
            offset = pack.index.offsets.get(sha)
            if offset is not None:
                return pack, offset
        return None

    def __contains__(self, sha: bytes) -> bool:
        if self.find(sha) is not None:
            return True
        if os.path.exists(self._loose_path(sha)):
            return True
        if not self.alternates:
            return False
        try:
            self.store.get_raw(ObjectID(sha))
        except (KeyError, ValueError):
            return False
        return True

    def _loose_path(self, sha: bytes) -> str:
        name = sha.decode("ascii")
        return os.path.join(self.loose, name[:2], name[2:])

    # -- what objects are -------------------------------------------------------------------

    def kind(self, sha: bytes) -> int | None:
        """The type (1-4) of hex id ``sha``, read from headers only; None if missing."""
        found = self.find(sha)
        if found is None:
            try:
                return self.raw(sha)[0]
            except KeyError:
                return None
        pack, offset = found
        for _ in range(MAX_CHAIN):
            entry = read_entry(pack.data, offset)
            if entry.kind == OFS_DELTA:
                assert isinstance(entry.base, int)
                offset = entry.base
            elif entry.kind == REF_DELTA:
                assert isinstance(entry.base, bytes)
                return self.kind(entry.base)
            else:
                return entry.kind
        raise ValueError(f"delta chain too long at {sha!r}")

    def size(self, sha: bytes) -> int | None:
        """The size of hex id ``sha``'s content, without resolving its delta; None if missing."""
        found = self.find(sha)
        if found is None:
            try:
                return len(self.raw(sha)[1])
            except KeyError:
                return None
        pack, offset = found
        entry = read_entry(pack.data, offset)
        if entry.kind not in (OFS_DELTA, REF_DELTA):
            return entry.size
        # a delta starts with the sizes of its base and its result
        view = pack.view
        head = inflate_head(
            (view[at : at + 256] for at in range(entry.data_start, len(view), 256)), 20
        )
        return delta_sizes(head)[1]

    def raw(self, sha: bytes) -> tuple[int, bytes]:
        """(type, content) of hex id ``sha``; KeyError if the repository lacks it."""
        found = self.find(sha)
        if found is not None:
            return self.unpack(*found)
        with contextlib.suppress(FileNotFoundError):
            with open(self._loose_path(sha), "rb") as f:
                whole = zlib.decompress(f.read())
            header, _, content = whole.partition(b"\0")
            kind = TYPE_NAMES.get(header.split(b" ", 1)[0])
            if kind is None:
                raise ValueError(f"loose object {sha!r} of unknown type")
            return kind, content
        if not self.alternates:
            raise KeyError(sha)
        try:
            kind_number, chunks = self.store.get_raw(ObjectID(sha))
        except ValueError:
            raise KeyError(sha) from None
        return int(kind_number), chunks if isinstance(chunks, bytes) else b"".join(chunks)

    def unpack(self, pack: Pack, offset: int) -> tuple[int, bytes]:
        """(type, content) of the entry at ``offset`` of ``pack``."""
        key = (pack.number, offset)
        cached = self._bases.get(key)
        if cached is not None:
            return cached
        chain: list[tuple[Pack, int, Entry]] = []
        for _ in range(MAX_CHAIN):
            entry = read_entry(pack.data, offset)
            if entry.kind == OFS_DELTA:
                chain.append((pack, offset, entry))
                assert isinstance(entry.base, int)
                offset = entry.base
            elif entry.kind == REF_DELTA:
                chain.append((pack, offset, entry))
                assert isinstance(entry.base, bytes)
                found = self.find(entry.base)
                if found is None:
                    kind, content = self.raw(entry.base)
                    break
                pack, offset = found
            else:
                kind, content = entry.kind, inflate(pack.view, entry.data_start, entry.size)
                break
            cached = self._bases.get((pack.number, offset))
            if cached is not None:
                kind, content = cached
                break
        else:
            raise ValueError("delta chain too long")
        for delta_pack, delta_offset, delta in reversed(chain):
            delta_data = inflate(delta_pack.view, delta.data_start, delta.size)
            applied = apply_delta(content, delta_data)
            content = applied if isinstance(applied, bytes) else b"".join(applied)
            self._keep((delta_pack.number, delta_offset), kind, content)
        return kind, content

    def _keep(self, key: tuple[int, int], kind: int, content: bytes) -> None:
        if self._base_bytes + len(content) > BASE_CACHE_BYTES:
            self._bases.clear()
            self._base_bytes = 0
        self._bases[key] = (kind, content)
        self._base_bytes += len(content)


def inflate(view: memoryview, pos: int, size: int) -> bytes:
    """The ``size`` bytes that the zlib stream at ``pos`` of ``view`` inflates to."""
    inflater = zlib.decompressobj()
    chunk = size + 64
    out = inflater.decompress(view[pos : pos + chunk], size)
    pos += chunk
    while not inflater.eof and len(out) < size:
        more = view[pos : pos + chunk]
        if not more:
            raise ValueError("truncated pack entry")
        pos += chunk
        chunk *= 2
        out += inflater.decompress(inflater.unconsumed_tail + more, size - len(out))
    if len(out) != size:
        raise ValueError("pack entry of the wrong size")
    return out
