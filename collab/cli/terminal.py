"""What the commands print: text from the server shown, never obeyed, by the terminal.

Commit subjects, author names and paths come from whoever pushed them: an escape sequence in
one (``ESC ] 0 ; ... BEL`` retitles a terminal, ``ESC [ 2 J`` clears it) or a bidi control
(which reorders what follows on the line) would act on the reader's terminal. Printed text
has them written as escapes instead; line feeds and tabs stay.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any, TextIO

__all__ = ["ShownOutput", "columns", "one_line", "shown"]

_ACTING = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def shown(text: str) -> str:
    """``text`` with the characters a terminal acts on (controls but line feed and tab, bidi
    controls, line and paragraph separators) written as ``\\xNN`` or ``\\uNNNN``."""
    return _ACTING.sub(_escape, text)


def one_line(text: str) -> str:
    """``text`` (a path: git allows any byte but NUL and ``/`` in a name) kept to one line:
    line feeds and tabs written as ``\\x0a`` and ``\\x09`` too, so that no name can pass
    for another line of the output."""
    return text.replace("\n", "\\x0a").replace("\t", "\\x09")


class ShownOutput:
    """A text stream that writes what it is given through :func:`shown` to ``out``."""

    def __init__(self, out: TextIO) -> None:
        self._out = out

    def write(self, text: str) -> int:
        self._out.write(shown(text))
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._out, name)


def columns(text: str) -> int:
    """The terminal columns ``text`` takes once shown: wide characters (CJK) take two,
    combining marks and zero-width characters none."""
    width = 0
    for char in shown(text):
        if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf"):
            continue
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return width
