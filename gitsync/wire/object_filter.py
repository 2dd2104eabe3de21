"""Object filters of partial clones (``git clone --filter=...``), as git's ``rev-list`` reads
them: ``blob:none``, ``blob:limit=<n>[kmg]``, ``tree:<depth>`` and ``combine:<f>+<f>...``.

A filter leaves objects out of a fetch's pack; the client fetches them later, one lazy fetch
at a time, when it needs them (a checkout, ``git log -p``). Objects a request names itself
(its ``want`` lines) are always sent, as git sends them.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

__all__ = ["FilterError", "ObjectFilter", "parse_filter"]

_SIZE = re.compile(r"([0-9]+)([kmg]?)", re.IGNORECASE)
_SCALE = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
MAX_TREE_DEPTH = 1 << 20


class FilterError(ValueError):
    """A filter that is malformed or not supported; the message is for the client."""


@dataclass(frozen=True, slots=True)
class ObjectFilter:
    """What a fetch leaves out: blobs of ``blob_limit`` bytes or more (0: every blob), and
    trees and blobs at ``tree_depth`` or deeper below a commit's root tree (0: every tree).
    None: no limit of that kind."""

    spec: str
    blob_limit: int | None = None
    tree_depth: int | None = None

    def keeps_blob(self, size: int, depth: int) -> bool:
        if self.tree_depth is not None and depth >= self.tree_depth:
            return False
        return self.blob_limit is None or size < self.blob_limit

    @property
    def needs_sizes(self) -> bool:
        return self.blob_limit is not None and self.blob_limit > 0

    @property
    def drops_blobs(self) -> bool:
        return self.blob_limit == 0 or (self.tree_depth is not None and self.tree_depth <= 1)


def _size(text: str, spec: str) -> int:
    match = _SIZE.fullmatch(text)
    if match is None:
        raise FilterError(f"invalid filter-spec '{spec}'")
    return int(match.group(1)) * _SCALE[match.group(2).lower()]


def parse_filter(spec: str) -> ObjectFilter:
    """The filter that ``spec`` describes; :class:`FilterError` if it is not one of the
    kinds this server implements."""
    blob_limit: int | None = None
    tree_depth: int | None = None
    if spec.startswith("combine:"):
        parts = [urllib.parse.unquote(part) for part in spec[len("combine:") :].split("+")]
        if not parts or any(not part for part in parts):
            raise FilterError(f"invalid filter-spec '{spec}'")
    else:
        parts = [spec]
    for part in parts:
        if part.startswith("combine:"):
            raise FilterError(f"invalid filter-spec '{spec}'")
        one = _one(part)
        if one.blob_limit is not None:
            blob_limit = one.blob_limit if blob_limit is None else min(blob_limit, one.blob_limit)
        if one.tree_depth is not None:
            tree_depth = one.tree_depth if tree_depth is None else min(tree_depth, one.tree_depth)
    return ObjectFilter(spec, blob_limit, tree_depth)


def _one(spec: str) -> ObjectFilter:
    if spec == "blob:none":
        return ObjectFilter(spec, blob_limit=0)
    if spec.startswith("blob:limit="):
        return ObjectFilter(spec, blob_limit=_size(spec[len("blob:limit=") :], spec))
    if spec.startswith("tree:"):
        depth = spec[len("tree:") :]
        if not depth.isdigit() or int(depth) > MAX_TREE_DEPTH:
            raise FilterError(f"invalid filter-spec '{spec}'")
        return ObjectFilter(spec, tree_depth=int(depth))
    kind = spec.split("=", 1)[0]
    raise FilterError(f"filter '{kind}' not supported")
