"""The type of a stored object, read from the header of its pack entry or loose file.

A push's trees refer to many objects the repository already has (the unchanged files beside a
changed one). Checking that each is there and of the type its reference says, as git's
index-pack ``--strict`` does, must not inflate each of them: the type is in the first bytes of
a pack entry (a delta's is its base's, found by following its base) or of a loose object.
"""

from __future__ import annotations

import contextlib
import os
import zlib
from typing import BinaryIO

from dulwich.object_store import DiskObjectStore
from dulwich.objects import ObjectID, RawObjectID
from dulwich.pack import PackIndex, load_pack_index

from ..packs.read import inflate_head

__all__ = ["StoredTypes"]

_OFS_DELTA, _REF_DELTA = 6, 7
_TYPES = {b"commit": 1, b"tree": 2, b"blob": 3, b"tag": 4}
_MAX_CHAIN = 10_000
"""Deltas followed before a chain is taken to be broken (git writes chains of at most 50)."""


class StoredTypes:
    """Types of the objects of ``store`` (binary ids in, 1-4 or None out); close when done."""

    def __init__(self, store: DiskObjectStore) -> None:
        self.store = store
        self._files: dict[str, BinaryIO] = {}
        self._indexes: list[tuple[str, PackIndex]] | None = None

    def __enter__(self) -> StoredTypes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()
        for _, index in self._indexes or ():
            index.close()
        self._indexes = None

    def _packs(self) -> list[tuple[str, PackIndex]]:
        """(pack path, index) of each pack with an index, opened once."""
        if self._indexes is None:
            self._indexes = []
            pack_dir = str(self.store.pack_dir)
            with contextlib.suppress(FileNotFoundError):
                for name in sorted(os.listdir(pack_dir)):
                    if not name.endswith(".idx"):
                        continue
                    path = os.path.join(pack_dir, name)
                    with contextlib.suppress(OSError, ValueError, AssertionError):
                        index = load_pack_index(path, self.store.object_format)
                        self._indexes.append((path.removesuffix(".idx") + ".pack", index))
        return self._indexes

    def type_of(self, oid: bytes) -> int | None:
        """The type of the object with binary id ``oid``, or None if the store lacks it."""
        for _ in range(_MAX_CHAIN):
            found = self._packed(oid)
            if found is None:
                return self._unpacked(oid)
            kind, base = found
            if base is None:
                return kind
            oid = base
        return None

    def _packed(self, oid: bytes) -> tuple[int, bytes | None] | None:
        """(type, None), or (0, base id) for a delta against another object; None if no
        pack has ``oid``."""
        for path, index in self._packs():
            try:
                offset = index.object_offset(RawObjectID(oid))
            except KeyError:
                continue
            try:
                return self._entry(path, offset)
            except (OSError, ValueError, IndexError):
                return None  # (a pack combined away meanwhile; the store is asked instead)
        return None

    def _entry(self, path: str, offset: int) -> tuple[int, bytes | None]:
        f = self._files.get(path)
        if f is None:
            f = self._files[path] = open(path, "rb")  # noqa: SIM115 (closed by close())
        for _ in range(_MAX_CHAIN):
            f.seek(offset)
            head = f.read(32)
            byte = head[0]
            kind, pos = (byte >> 4) & 7, 1
            while byte & 0x80:  # the size, which is not needed
                byte = head[pos]
                pos += 1
            if kind == _REF_DELTA:
                return 0, head[pos : pos + 20]
            if kind != _OFS_DELTA:
                return kind, None
            byte = head[pos]
            back = byte & 0x7F
            while byte & 0x80:
                pos += 1
                byte = head[pos]
                back = ((back + 1) << 7) | (byte & 0x7F)
            offset -= back
        raise ValueError("delta chain too long")

    def _unpacked(self, oid: bytes) -> int | None:
        hexsha = oid.hex()
        path = os.path.join(str(self.store.path), hexsha[:2], hexsha[2:])
        with contextlib.suppress(OSError, zlib.error):
            with open(path, "rb") as f:  # "<type> <size>\0" opens the inflated object
                header = inflate_head(iter(lambda: f.read(256), b""), 32)
            kind = _TYPES.get(header.split(b" ", 1)[0])
            if kind is not None:
                return kind
        try:  # an alternate, or a pack that came meanwhile
            return int(self.store.get_raw(ObjectID(hexsha.encode("ascii")))[0])
        except KeyError:
            return None
