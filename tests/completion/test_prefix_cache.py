"""Each typist's prompt cache: longest shared prefix, a byte bound, least recently used out."""

from __future__ import annotations

from collab.completion.prefix_cache import CachedPrefix, PrefixCache, common_prefix


def entry(ids: list[int], size: int) -> CachedPrefix:
    return CachedPrefix(tuple(ids), (), size)


def test_common_prefix() -> None:
    assert common_prefix([1, 2, 3], (1, 2, 4)) == 2  # lists and tuples alike
    assert common_prefix([1, 2, 3], [1, 2, 3, 4]) == 3
    assert common_prefix([], [1]) == 0
    assert common_prefix([5], [6]) == 0
    long = list(range(5000))
    assert common_prefix(long, [*long[:4321], -1]) == 4321


def test_bound_and_least_recently_used_eviction_over_100_typists() -> None:
    cache = PrefixCache(max_bytes=1000)
    for typist in range(100):
        assert cache.put(f"t{typist}", entry([typist], 90 + typist % 7))
        assert cache.nbytes <= 1000
    kept = cache.keys()
    assert kept == [f"t{i}" for i in range(100 - len(kept), 100)] and len(kept) >= 9
    oldest = kept[0]
    assert cache.get(oldest) is not None  # a use: now the most recent
    cache.put("new", entry([0], 200))
    assert oldest in cache and kept[1] not in cache and kept[2] not in cache
    assert cache.keys()[-2:] == [oldest, "new"]
    assert cache.nbytes <= 1000 and cache.evictions == 100 - len(kept) + 2


def test_replacing_an_entry_and_refusing_one_over_the_bound() -> None:
    cache = PrefixCache(max_bytes=100)
    cache.put("a", entry([1], 60))
    cache.put("a", entry([1, 2], 70))  # the typist's newer prompt replaces the older
    assert len(cache) == 1 and cache.nbytes == 70
    assert not cache.put("b", entry([3], 101))  # larger than the bound: never kept
    assert "b" not in cache and "a" in cache
    assert cache.get("missing") is None and cache.misses == 1
    cache.clear()
    assert cache.nbytes == 0 and not cache.keys()


def test_a_typist_keeps_a_cache_for_each_place_it_works_in() -> None:
    """Going back and forth between two places of a file: each place has an entry, a request
    starts from the one sharing most with it, and typing on at a place replaces its entry."""
    cache = PrefixCache(max_bytes=1000, per_key=2)
    head = [7, 7, 7]  # the other files, the same for both places
    top, bottom = [*head, 1, 2, 3, 4], [*head, 5, 6, 7, 8]
    cache.put("t", entry(top, 100))
    cache.put("t", entry(bottom, 100))  # shares less than half: a second place
    assert len(cache.entries("t")) == 2 and len(cache) == 1
    best = cache.get("t", [*top, 9])
    assert best is not None and best.ids == tuple(top)
    cache.put("t", entry([*top, 9], 100))  # typed on at the top: replaces that entry
    assert [e.ids for e in cache.entries("t")] == [tuple(bottom), (*top, 9)]
    cache.put("t", entry([*head, 0, 0, 0, 0], 100))  # a third place: the oldest goes
    assert [e.ids for e in cache.entries("t")] == [(*top, 9), (*head, 0, 0, 0, 0)]


def test_under_the_bound_older_places_go_before_any_typists_last() -> None:
    cache = PrefixCache(max_bytes=300)
    cache.put("a", entry([1, 1, 1, 1], 100))
    cache.put("a", entry([2, 2, 2, 2], 100))  # a's last; its first place is now older
    cache.put("b", entry([3, 3, 3, 3], 100))
    cache.put("c", entry([4, 4, 4, 4], 100))  # evicts a's older place, not b's only entry
    assert [e.ids for e in cache.entries("a")] == [(2, 2, 2, 2)]
    assert "b" in cache and "c" in cache and cache.evictions == 1
