"""Garbage collection in ``collab serve``: full collections made rarer, and what only cycles
hold collected when a large room's memory is given back."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from collab.cli.commands import GC_FULL_AFTER, tune_gc
from collab.live.memory import release_free_memory


@pytest.fixture
def thresholds() -> Iterator[tuple[int, int, int]]:
    before = gc.get_threshold()
    try:
        yield before
    finally:
        gc.set_threshold(*before)


def test_serve_makes_full_collections_rarer_and_keeps_the_rest(
    thresholds: tuple[int, int, int],
) -> None:
    tune_gc()
    young, middle, full = gc.get_threshold()
    assert (young, middle) == thresholds[:2]
    assert full == GC_FULL_AFTER > thresholds[2]


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def test_giving_memory_back_collects_what_only_cycles_hold() -> None:
    first, second = _Node(), _Node()
    first.other, second.other = second, first
    gone = weakref.ref(first)
    was_enabled = gc.isenabled()
    gc.disable()  # no automatic collection meanwhile: only ours can free the pair
    try:
        del first, second
        assert gone() is not None
        release_free_memory()
        assert gone() is None
    finally:
        if was_enabled:
            gc.enable()
