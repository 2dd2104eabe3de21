"""Where a prompt's excerpt of the file starts: in the same place while a typist works in one
part of the file, and in the place it had before when the typist comes back to a part.

A prompt cache matches a new prompt only up to its first token that differs, and the file's
excerpt comes right after the other files: if the excerpt's start moves by a line, every
token after it is prefilled again. So an excerpt starts at one of few places:

- a start remembered for the typist (its last ``places`` ones) while the cursor is after it,
  at least ``least`` characters past it (a prompt keeps some code before the cursor), and
  the excerpt from it fits; of those, the one whose last excerpt ended nearest the cursor
  (the part of the file the typist is back in). A remembered start follows edits made
  before it: it is found again by the text that followed it, nearest to where it was;
- else the first line start after a point of a fixed grid of the document (multiples of
  ``grain`` characters), the earliest whose excerpt fits with a grain to spare. It depends on
  the stretch of the grid the cursor is in, not on the cursor's exact place nor on where the
  typist was before: a jump within a stretch, or back to a part whose remembered start was
  forgotten, lands on the start it had; and typing on moves it only after a grain of text.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Hashable
from dataclasses import dataclass

__all__ = ["Starts", "grid_start"]

_SNIPPET = 32  # characters after a start that find it again after edits before it
_SEARCH = 8192  # how far from where it was a moved start is looked for


@dataclass(slots=True)
class _Mark:
    position: int  # in the document (code points)
    follows: str  # the text that followed it
    end: int  # where the excerpt from it ended last (the cursor)


def grid_start(
    text: str, end: int, fits: Callable[[int], bool], grain: int, offset: int = 0
) -> int:
    """The start (a position of ``text``, which begins at ``offset`` of the document) of an
    excerpt ending at ``end``: the first line start after a multiple of ``grain`` (counted
    in the document), the earliest such that the excerpt fits with a grain to spare, as
    ``fits`` says (true for shorter excerpts once true); the start of ``text`` when all of
    it fits, ``end`` when nothing does."""
    grain = max(1, grain)

    def cut(k: int) -> int:
        point = k * grain - offset
        if point <= 0:
            return 0
        if point >= end:
            return end
        line = text.find("\n", point - 1, min(end, point - 1 + grain))
        return line + 1 if line >= 0 else point

    low, high = offset // grain, (offset + end) // grain + 1  # cut(high) == end
    if fits(cut(low)):
        high = low
    while high - low > 1:  # fits(cut(high)), not fits(cut(low))
        middle = (low + high) // 2
        if fits(cut(middle)):
            high = middle
        else:
            low = middle
    first = cut(high)
    if first == 0:  # all of it fits
        return 0
    spare = cut(high + 1)
    return spare if end - spare >= grain else first


class Starts:
    """Each typist's remembered excerpt starts (the last ``places`` of each), for at most
    ``max_keys`` typists, the least recently asked for out first."""

    def __init__(self, places: int = 4, max_keys: int = 4096) -> None:
        self.places = max(1, places)
        self.max_keys = max(1, max_keys)
        self._marks: collections.OrderedDict[Hashable, list[_Mark]] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._marks)

    def remembered(self, key: Hashable) -> list[int]:
        """``key``'s remembered starts (document positions), most recent first."""
        return [mark.position for mark in self._marks.get(key, [])]

    def choose(
        self,
        key: Hashable | None,
        text: str,
        end: int,
        fits: Callable[[int], bool],
        *,
        grain: int,
        least: int,
        offset: int = 0,
    ) -> int:
        """The start (a position of ``text``, which begins at ``offset`` of the document) of
        ``key``'s excerpt ending at ``end``: see the module's docstring. ``fits(start)``
        says whether ``text[start:end]`` fits the prompt."""
        marks = self._marks.get(key, []) if key is not None else []
        chosen: int | None = None
        distance = 0
        kept: list[_Mark] = []
        for mark in marks:
            at = _find(text, mark, offset)
            if at is None:
                if 0 <= mark.position - offset <= len(text):
                    continue  # its text is gone: forget it
                kept.append(mark)  # outside what this text shows: keep it as it was
                continue
            mark.end += offset + at - mark.position  # (an estimate: edits between them)
            mark.position = offset + at
            kept.append(mark)
            far = abs(offset + end - mark.end)
            if chosen is not None and far >= distance:
                continue  # the part of the file it served is further from the cursor
            if at <= end and (offset + at == 0 or end - at >= least) and fits(at):
                chosen, distance = at, far
        if chosen is None:
            chosen = grid_start(text, end, fits, grain, offset)
        if key is not None:
            mine = [m for m in kept if m.position != offset + chosen]
            mark = _Mark(offset + chosen, text[chosen : chosen + _SNIPPET], offset + end)
            mine.insert(0, mark)
            self._marks[key] = mine[: self.places]
            self._marks.move_to_end(key)
            while len(self._marks) > self.max_keys:
                self._marks.popitem(last=False)
        return chosen


def _find(text: str, mark: _Mark, offset: int) -> int | None:
    """Where ``mark`` is in ``text`` now (a line start, or ``text``'s start), found by the
    text that followed it, nearest to where it was; None if not there."""
    at = mark.position - offset
    if mark.position == 0 and offset == 0:
        return 0
    if at < 0:
        return None

    def good(where: int) -> bool:
        return where == 0 or text[where - 1] == "\n"

    if at <= len(text) and text.startswith(mark.follows, at) and good(at):
        return at
    if not mark.follows or at > len(text) + _SEARCH:
        return None
    after = text.find(mark.follows, max(0, at), at + _SEARCH + len(mark.follows))
    before = text.rfind(mark.follows, max(0, at - _SEARCH), min(len(text), at + len(mark.follows)))
    found = [w for w in (after, before) if w >= 0 and good(w)]
    return min(found, key=lambda w: abs(w - at)) if found else None
