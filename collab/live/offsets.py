"""Index conversions: pycrdt counts UTF-8 bytes, JavaScript Yjs UTF-16 units, Python code points."""

from __future__ import annotations

__all__ = ["codepoint_to_utf16", "utf8_offset", "utf16_to_codepoint"]


def utf8_offset(text: str, index: int) -> int:
    """The UTF-8 byte offset of code point ``index`` in ``text`` (what pycrdt's ``Text`` takes)."""
    if not 0 <= index <= len(text):
        raise IndexError(f"index {index} outside text of length {len(text)}")
    return len(text[:index].encode("utf-8"))


def codepoint_to_utf16(text: str, index: int) -> int:
    """The UTF-16 unit offset (what JavaScript Yjs counts) of code point ``index``."""
    return index + sum(1 for ch in text[:index] if ord(ch) > 0xFFFF)


def utf16_to_codepoint(text: str, index: int) -> int:
    """The code point index of UTF-16 offset ``index``; an offset inside a pair rounds down."""
    units = 0
    for position, ch in enumerate(text):
        width = 2 if ord(ch) > 0xFFFF else 1
        if units + width > index:
            return position
        units += width
    return len(text)
