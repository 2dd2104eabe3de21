"""How git merges a file, as its ``.gitattributes`` say (the ``merge`` and ``binary``
attributes), read from the tree merged into, as ``git merge`` reads them from the checkout.

- ``merge=union``: both sides' lines where they conflict, ours first, and no conflict;
- ``-merge``, ``merge=binary`` or ``binary`` (the macro ``-diff -merge -text``): the file is
  not merged line by line: if both sides changed it, ours is kept and it conflicts;
- otherwise (no attribute, ``merge``, ``merge=text``, or a driver of a name this server has
  not configured, which git merges as text too): merged line by line.

Every driver takes a file that looks binary for one (git's ``Cannot merge binary files``).
Macros other than ``binary`` (``[attr]`` lines) and ``$GIT_DIR/info/attributes`` are not read.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Mapping
from typing import Literal

from dulwich.attrs import AttributeValue, GitAttributes, Pattern, parse_git_attributes

__all__ = ["Driver", "MergeAttributes"]

Driver = Literal["text", "binary", "union"]

log = logging.getLogger("gitsync.merge")

_FILE = ".gitattributes"


class MergeAttributes:
    """The merge driver of each path of one tree, its ``.gitattributes`` files read as
    needed by ``read(path)`` (a file's content, ``None`` if it is not there)."""

    def __init__(self, read: Callable[[str], bytes | None]) -> None:
        self._read = read
        self._attributes = GitAttributes(
            self._patterns(""), directory_loader=lambda d: self._patterns(d.decode())
        )

    def _patterns(self, directory: str) -> list[tuple[Pattern, Mapping[bytes, AttributeValue]]]:
        data = self._read(f"{directory}/{_FILE}" if directory else _FILE)
        if not data:
            return []
        base = directory.encode("utf-8", "surrogateescape")
        patterns = []
        try:
            for pattern, attributes in parse_git_attributes(io.BytesIO(data)):
                if pattern.startswith(b"[attr]"):
                    continue  # a macro's definition
                patterns.append((Pattern(pattern, base), attributes))
        except ValueError as exc:  # a line git would skip: the file is read up to it
            log.warning("%s: unreadable line in %s: %s", directory or "/", _FILE, exc)
        return patterns

    def driver(self, path: str) -> Driver:
        """How ``path`` is merged."""
        found = self._attributes.match_path(path.encode("utf-8", "surrogateescape"))
        merge = found.get(b"merge")
        if found.get(b"binary") is True and merge is None:
            return "binary"
        if merge is False or merge == b"binary":
            return "binary"
        if merge == b"union":
            return "union"
        return "text"
