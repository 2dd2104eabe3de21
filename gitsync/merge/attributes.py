"""How git merges a file, as its ``.gitattributes`` say (the ``merge`` attribute), read from
the tree merged into, as ``git merge`` reads them from the checkout.

- ``merge=union``: both sides' lines where they conflict, ours first, and no conflict;
- ``-merge`` or ``merge=binary`` (``binary``, a macro, sets ``-diff -merge -text``): the
  file is not merged line by line: if both sides changed it, ours is kept and it conflicts;
- otherwise (no attribute, ``merge``, ``merge=text``, or a driver of a name this server has
  not configured, which git merges as text too): merged line by line.

Every driver takes a file that looks binary for one (git's ``Cannot merge binary files``).
Lines are read as git reads them: a pattern may be C-quoted (``"a b.txt"``), later
attributes override earlier ones (on a line, and lines below those above), a deeper
directory's file overrides its parents', and macros (``binary``, and ``[attr]`` lines of the
top-level file) set their attributes where they are set. ``$GIT_DIR/info/attributes`` is
not read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal

from dulwich.attrs import AttributeValue, GitAttributes, Pattern

__all__ = ["Driver", "MergeAttributes"]

Driver = Literal["text", "binary", "union"]

_FILE = ".gitattributes"


_BUILTIN_MACROS: dict[bytes, list[tuple[bytes, AttributeValue]]] = {
    b"binary": [(b"diff", False), (b"merge", False), (b"text", False)],
}
_ESCAPES = {ord("n"): 10, ord("t"): 9, ord("r"): 13, ord("a"): 7, ord("b"): 8, ord("f"): 12}


def _unquote(line: bytes) -> tuple[bytes, bytes] | None:
    """The C-quoted pattern ``line`` starts with, unquoted, and the rest of the line;
    ``None`` if the quote is not closed (git skips such a line)."""
    out = bytearray()
    i = 1
    while i < len(line):
        char = line[i]
        if char == 0x22:  # "
            return bytes(out), line[i + 1 :]
        if char == 0x5C and i + 1 < len(line):  # a backslash
            following = line[i + 1]
            octal = line[i + 1 : i + 4]
            if len(octal) == 3 and all(0x30 <= b <= 0x37 for b in octal):
                out.append(int(octal, 8) & 0xFF)
                i += 4
                continue
            out.append(_ESCAPES.get(following, following))
            i += 2
            continue
        out.append(char)
        i += 1
    return None


def _attribute(token: bytes) -> tuple[bytes, AttributeValue]:
    """``name`` (set), ``-name`` (unset), ``!name`` (unspecified) or ``name=value``."""
    if token.startswith(b"-"):
        return token[1:], False
    if token.startswith(b"!"):
        return token[1:], None
    name, equals, value = token.partition(b"=")
    return (name, value) if equals else (name, True)


class MergeAttributes:
    """The merge driver of each path of one tree, its ``.gitattributes`` files read as
    needed by ``read(path)`` (a file's content, ``None`` if it is not there)."""

    def __init__(self, read: Callable[[str], bytes | None]) -> None:
        self._read = read
        self._macros = dict(_BUILTIN_MACROS)
        self._attributes = GitAttributes(
            self._patterns(""), directory_loader=lambda d: self._patterns(d.decode())
        )

    def _patterns(self, directory: str) -> list[tuple[Pattern, Mapping[bytes, AttributeValue]]]:
        data = self._read(f"{directory}/{_FILE}" if directory else _FILE)
        if not data:
            return []
        base = directory.encode("utf-8", "surrogateescape")
        patterns: list[tuple[Pattern, Mapping[bytes, AttributeValue]]] = []
        for raw in data.splitlines():
            line = raw.strip()
            if not line or line.startswith(b"#"):
                continue
            if line.startswith(b'"'):
                quoted = _unquote(line)
                if quoted is None:
                    continue
                pattern, rest = quoted
            else:
                pattern, *others = line.split(None, 1)
                rest = others[0] if others else b""
            tokens = [_attribute(token) for token in rest.split()]
            if pattern.startswith(b"[attr]"):  # a macro: honoured in the top-level file only
                if not directory:
                    self._macros[pattern[6:]] = tokens
                continue
            patterns.append((Pattern(pattern, base), self._expand(tokens)))
        return patterns

    def _expand(self, tokens: list[tuple[bytes, AttributeValue]]) -> dict[bytes, AttributeValue]:
        """A line's attributes, macros set where they are set, later ones overriding."""
        attributes: dict[bytes, AttributeValue] = {}
        for name, value in tokens:
            attributes.pop(name, None)  # (its place is where it was last given)
            attributes[name] = value
            if value is True and name in self._macros:
                for inner, inner_value in self._macros[name]:
                    attributes.pop(inner, None)
                    attributes[inner] = inner_value
        return attributes

    def driver(self, path: str) -> Driver:
        """How ``path`` is merged."""
        found = self._attributes.match_path(path.encode("utf-8", "surrogateescape"))
        merge = found.get(b"merge")
        if merge is False or merge == b"binary":
            return "binary"
        if merge == b"union":
            return "union"
        return "text"
