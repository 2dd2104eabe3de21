"""Where a prompt's excerpt of the file starts: the same place for a jump within a part of
the file, the remembered place on coming back, and that place found again after edits."""

from __future__ import annotations

import itertools

from collab.completion import Family, PromptParts, render
from collab.completion.context import window
from collab.completion.excerpt import Starts, grid_start
from collab.completion.prompts import approx_tokens

TEXT = "".join(f"value_{i} = compute({i})\n" for i in range(3000))


def line_start(index: int) -> int:
    return TEXT.rfind("\n", 0, index) + 1


def starts_for(
    text: str, cursors: list[int], starts: tuple[Starts, Starts] | None = None
) -> list[int]:
    """Where the prompt's prefix starts in the document, server and worker choosing as
    they do (with what they remember in ``starts``), for each cursor in turn."""
    server, worker = starts or (Starts(), Starts())
    out = []
    for cursor in cursors:
        prefix, suffix = window(text, cursor, 2048, server, "alice")
        parts = PromptParts("demo", "src/app.py", prefix, suffix, (), cursor - len(prefix))
        rendered = render(
            Family.QWEN_CODER,
            parts,
            2048,
            approx_tokens,
            single_line=True,
            starts=worker,
            key="alice",
        )
        assert approx_tokens(rendered.text) <= 2048
        out.append(parts.start + len(parts.prefix) - len(rendered.prefix))
    return out


def test_the_grid_start_is_a_line_start_that_fits_with_room_to_spare() -> None:
    size, grain = 3000, 400
    for cursor in (10_000, 10_007, 23_456, 40_000):
        start = grid_start(TEXT, cursor, lambda at, c=cursor: c - at <= size, grain)
        assert TEXT[start - 1] == "\n"
        assert size - 2 * grain - 60 <= cursor - start <= size - grain + 60  # (a line: 28)
    assert grid_start(TEXT, 2500, lambda at: 2500 - at <= size, grain) == 0  # all of it fits


def test_a_jump_within_a_block_keeps_the_start_without_any_history() -> None:
    """Cursors in one stretch of the grid get the same start even for a typist never seen
    before: the start depends on the stretch, not on the exact place or the past."""
    cursors = range(40_000, 42_000, 23)
    got = [starts_for(TEXT, [cursor])[0] for cursor in cursors]
    assert len(set(got)) <= 6  # of 87 cursors: about one start per stretch of 460
    assert got == sorted(got)


def test_typing_on_keeps_the_start_for_a_while_and_then_moves_it_once() -> None:
    cursors = list(range(40_000, 42_000, 9))
    got = starts_for(TEXT, cursors)
    moves = sum(1 for x, y in itertools.pairwise(got) if x != y)
    assert moves <= 4  # of 222 requests
    assert all(TEXT[s - 1] == "\n" for s in got)


def test_jumping_back_to_an_earlier_place_finds_its_start() -> None:
    """Working at A, then far away at B, then back at A (a little off where A ended): the
    prefix starts where it started at A, so the prompt cache kept for A serves."""
    a, b = 40_000, 70_000
    got = starts_for(TEXT, [a, a + 30, b, b + 10, a - 200, a + 40])
    assert got[0] == got[1] == got[4] == got[5]
    assert got[2] == got[3] != got[0]


def test_a_remembered_start_follows_edits_made_before_it() -> None:
    """Lines inserted above A while the typist works at B: back at A, the start is the same
    text as before, moved by what was inserted."""
    a, b = 40_000, 70_000
    kept = (Starts(), Starts())
    first, _ = starts_for(TEXT, [a, b], kept)
    inserted = "# a comment added at the top\n" * 3
    edited = inserted + TEXT
    back = starts_for(edited, [a + len(inserted) + 30], kept)[0]
    assert back == first + len(inserted)
    assert edited[back : back + 40] == TEXT[first : first + 40]


def test_the_starts_of_a_typist_are_bounded() -> None:
    starts = Starts(places=2, max_keys=3)
    for place in (10_000, 30_000, 50_000):
        starts.choose("a", TEXT, place, lambda at, p=place: p - at <= 2000, grain=250, least=250)
    assert len(starts.remembered("a")) == 2
    for key in "bcd":
        starts.choose(key, TEXT, 1000, lambda at: True, grain=250, least=250)
    assert len(starts) == 3 and starts.remembered("a") == []
