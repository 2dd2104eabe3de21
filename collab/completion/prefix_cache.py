"""Each typist's KV cache between requests, bounded in bytes, least recently used out first.

A typist asks again every few hundred milliseconds with a prompt that differs from the last
one by a few characters. The model's keys and values for the tokens both prompts share are
the same, so the engine keeps the last prompt's cache under the typist's key (connection and
document) and prefills only what follows the longest shared prefix of token ids.

A typist who works in two places of a file, going back and forth, asks with prompts whose
prefixes start at different places: each place keeps an entry of its own (``per_key``, by
default 4, for each typist), and a request starts from the one that shares most with it.
"""

from __future__ import annotations

import collections
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["CachedPrefix", "PrefixCache", "common_prefix"]


def common_prefix(a: Sequence[Any], b: Sequence[Any]) -> int:
    """How many leading items (token ids, or characters of two strings) ``a`` and ``b``
    share, found by halving (the comparisons run at C speed)."""
    if not (isinstance(a, str) and isinstance(b, str)):
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
    """At most ``per_key`` :class:`CachedPrefix` per key, holding at most ``max_bytes``.

    A new entry replaces the key's entries that it continues (that share at least half of
    their tokens with it: the same place of the file, typed on) and else joins them, the
    key's least recently used one out past ``per_key``. Storing evicts the least recently
    used entries (a ``get`` counts as a use) until everything fits, a key's older places
    before any key's most recent one; an entry larger than the bound on its own is not kept.
    Not thread-safe: one generation thread owns it.
    """

    def __init__(self, max_bytes: int, per_key: int = 4) -> None:
        self.max_bytes = max(0, max_bytes)
        self.per_key = max(1, per_key)
        self._entries: collections.OrderedDict[tuple[Hashable, int], CachedPrefix] = (
            collections.OrderedDict()
        )
        self._slots: dict[Hashable, list[tuple[Hashable, int]]] = {}
        self._serial = 0
        self._bytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def __len__(self) -> int:
        """How many keys have an entry."""
        return len(self._slots)

    def __contains__(self, key: object) -> bool:
        return key in self._slots

    @property
    def nbytes(self) -> int:
        """Bytes held by the entries."""
        return self._bytes

    def keys(self) -> list[Hashable]:
        """The keys, least recently used first (by their most recently used entry)."""
        last: dict[Hashable, int] = {}
        for order, (key, _) in enumerate(self._entries):
            last[key] = order
        return sorted(last, key=last.__getitem__)

    def entries(self, key: Hashable) -> list[CachedPrefix]:
        """``key``'s entries, least recently used first."""
        return [self._entries[slot] for slot in self._entries if slot[0] == key]

    def get(self, key: Hashable, ids: Sequence[int] | None = None) -> CachedPrefix | None:
        """``key``'s entry sharing the longest prefix with ``ids`` (the most recently used
        one without ``ids``); None if it has none."""
        slots = self._slots.get(key)
        if not slots:
            self.misses += 1
            return None
        ordered = [slot for slot in self._entries if slot[0] == key]
        best = ordered[-1]
        if ids is not None:
            best = max(
                reversed(ordered), key=lambda slot: common_prefix(self._entries[slot].ids, ids)
            )
        self.hits += 1
        self._entries.move_to_end(best)
        return self._entries[best]

    def put(self, key: Hashable, entry: CachedPrefix) -> bool:
        """Keep ``entry`` under ``key`` (replacing the entries it continues); whether it
        was kept."""
        slots = self._slots.get(key, [])
        for slot in list(slots):
            old = self._entries[slot].ids
            if 2 * common_prefix(old, entry.ids) >= len(old):
                self._drop(slot)
        if entry.nbytes > self.max_bytes:
            return False
        mine = [slot for slot in self._entries if slot[0] == key]
        for slot in mine[: max(0, len(mine) - self.per_key + 1)]:
            self._drop(slot)
        while self._entries and self._bytes + entry.nbytes > self.max_bytes:
            self._drop(self._victim())
            self.evictions += 1
        self._serial += 1
        slot = (key, self._serial)
        self._entries[slot] = entry
        self._slots.setdefault(key, []).append(slot)
        self._bytes += entry.nbytes
        return True

    def discard(self, key: Hashable) -> None:
        for slot in list(self._slots.get(key, [])):
            self._drop(slot)

    def clear(self) -> None:
        self._entries.clear()
        self._slots.clear()
        self._bytes = 0

    def _victim(self) -> tuple[Hashable, int]:
        """The least recently used entry that is not its key's most recently used one; the
        least recently used of all when each key has one."""
        latest: dict[Hashable, tuple[Hashable, int]] = {}
        for slot in self._entries:
            latest[slot[0]] = slot
        for slot in self._entries:
            if latest[slot[0]] is not slot:
                return slot
        return next(iter(self._entries))

    def _drop(self, slot: tuple[Hashable, int]) -> None:
        entry = self._entries.pop(slot)
        self._bytes -= entry.nbytes
        slots = self._slots[slot[0]]
        slots.remove(slot)
        if not slots:
            del self._slots[slot[0]]
