"""Anchors follow concurrent edits exactly, with multi-byte text (pycrdt counts UTF-8 bytes)."""

from __future__ import annotations

import random
from typing import Any

from pycrdt import Doc, Text

from collab.completion.anchors import Anchors
from collab.live.offsets import utf8_offset

POOLS = [(0x41, 0x7E), (0xE0, 0x17F), (0x4E00, 0x4EFF), (0x1F300, 0x1F3FF)]


class _FakeRoom:
    """The part of a room anchors use: a key and a pycrdt Text."""

    def __init__(self, text: Text) -> None:
        self.key = "fuzz"
        self.text = text


def test_anchor_sticks_to_the_character_before_it_under_concurrent_edits() -> None:
    rnd = random.Random(7)
    serial = 0

    def fresh(n: int) -> str:  # characters that never repeat, of 1 to 4 UTF-8 bytes
        nonlocal serial
        out = ""
        for _ in range(n):
            low, high = POOLS[rnd.randrange(len(POOLS))]
            out += chr(low + serial % (high - low))
            serial += 1
        return out

    checked = 0
    for _ in range(300):
        serial = rnd.randrange(10_000)
        initial = fresh(rnd.randint(1, 10))
        if len(set(initial)) != len(initial):
            continue
        here: Doc[Any] = Doc()
        text = here.get("source", type=Text)
        text += initial
        there: Doc[Any] = Doc()
        remote = there.get("source", type=Text)
        there.apply_update(here.get_update())
        cursor = rnd.randint(1, len(initial))
        left = initial[cursor - 1]
        anchors = Anchors()
        anchor = anchors.add(_FakeRoom(text), utf8_offset(initial, cursor))  # type: ignore[arg-type]
        for _ in range(rnd.randint(1, 6)):
            target = rnd.choice([text, remote])
            now = str(target)
            if rnd.random() < 0.7 or not now:
                at = rnd.randint(0, len(now))
                target.insert(utf8_offset(now, at), fresh(rnd.randint(1, 3)))
            else:
                at = rnd.randrange(len(now))
                end = min(len(now), at + rnd.randint(1, 3))
                del target[utf8_offset(now, at) : utf8_offset(now, end)]
            if rnd.random() < 0.5:
                here.apply_update(there.get_update(here.get_state()))
                there.apply_update(here.get_update(there.get_state()))
        here.apply_update(there.get_update(here.get_state()))
        final = str(text)
        if final.count(left) != 1:
            continue  # the character it stuck to was deleted
        assert anchor.offset == utf8_offset(final, final.index(left) + 1), (initial, final)
        assert anchor.codepoint() == final.index(left) + 1
        checked += 1
        anchors.remove(anchor)
        assert len(anchors) == 0
    assert checked > 100


def test_deletion_around_an_anchor_collapses_it() -> None:
    doc: Doc[Any] = Doc()
    text = doc.get("source", type=Text)
    text += "ab世cd"
    anchors = Anchors()
    anchor = anchors.add(_FakeRoom(text), utf8_offset("ab世cd", 3))  # type: ignore[arg-type]
    del text[1 : utf8_offset("ab世cd", 4)]  # "b世c"
    assert str(text) == "ad" and anchor.offset == 1
    text.insert(1, "🎉")  # at the anchor: lands after it
    assert anchor.codepoint() == 1


def test_an_anchor_made_after_keeps_what_is_typed_at_it_before_it() -> None:
    doc: Doc[Any] = Doc()
    text = doc.get("source", type=Text)
    text += "ab世cd"
    anchors = Anchors()
    at = utf8_offset("ab世cd", 3)
    start = anchors.add(_FakeRoom(text), at)  # type: ignore[arg-type]
    end = anchors.add(_FakeRoom(text), at, after=True)  # type: ignore[arg-type]
    text.insert(at, "🎉x")  # typed at them: between the two
    assert str(text) == "ab世🎉xcd"
    assert (start.codepoint(), end.codepoint()) == (3, 5)
    text.insert(0, "0")  # before both: both move
    assert (start.codepoint(), end.codepoint()) == (4, 6)
    text.insert(utf8_offset(str(text), 7), "y")  # after both: neither moves
    assert (start.codepoint(), end.codepoint()) == (4, 6)
    del text[utf8_offset(str(text), 2) : utf8_offset(str(text), 7)]  # around both: collapsed
    assert str(text) == "0ayd" and start.codepoint() == end.codepoint() == 2
