"""Each typist's KV cache between requests, bounded in bytes, least recently used out first.

A typist asks again every few hundred milliseconds with a prompt that differs from the last
one by a few characters. The model's keys and values for the tokens both prompts share are
the same, so the engine keeps the last prompt's cache under the typist's key (connection and
document) and prefills only what follows the longest shared prefix of token ids.
"""

from __future__ import annotations

import collections
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["CachedPrefix", "PrefixCache", "common_prefix"]


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading items ``a`` and ``b`` share."""
    a, b = tuple(a), tuple(b)  # (a list never equals a tuple)
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    low, high = 0, n  # a[:low] == b[:low], a[:high] != b[:high]
    while high - low > 1:
        middle = (low + high) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle
    return low


@dataclass(frozen=True, slots=True)
class CachedPrefix:
    """The keys and values (one pair per layer, shaped ``[1, heads, len(ids), head_dim]``)
    of the token ids ``ids``; ``nbytes`` is what they occupy."""

    ids: tuple[int, ...]
    layers: tuple[tuple[Any, Any], ...]
    nbytes: int


class PrefixCache:
    """One :class:`CachedPrefix` per key, holding at most ``max_bytes`` in all.

    Storing an entry evicts the least recently used ones (a ``get`` counts as a use) until
    everything fits; an entry larger than the bound on its own is not kept. Not thread-safe:
    one generation thread owns it.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max(0, max_bytes)
        self._entries: collections.OrderedDict[Hashable, CachedPrefix] = collections.OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    @property
    def nbytes(self) -> int:
        """Bytes held by the entries."""
        return self._bytes

    def keys(self) -> list[Hashable]:
        """The keys, least recently used first."""
        return list(self._entries)

    def get(self, key: Hashable) -> CachedPrefix | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return entry

    def put(self, key: Hashable, entry: CachedPrefix) -> bool:
        """Keep ``entry`` under ``key`` (replacing what it had); whether it was kept."""
        self.discard(key)
        if entry.nbytes > self.max_bytes:
            return False
        while self._entries and self._bytes + entry.nbytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= evicted.nbytes
            self.evictions += 1
        self._entries[key] = entry
        self._bytes += entry.nbytes
        return True

    def discard(self, key: Hashable) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= entry.nbytes

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0
