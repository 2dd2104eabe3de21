"""Which carets a peer's awareness state may carry to the others.

Editor bindings keep a person's caret and selection in their awareness state as ``cursor``
(y-codemirror.next, y-prosemirror, y-quill) or ``selection`` (y-monaco): ``{anchor, head}``,
each a Yjs relative position as ``Y.relativePositionToJSON`` writes it. They read the other
peers' without checking them: one malformed caret throws in every other page's editor, and
y-codemirror.next then turns its remote carets off for the page's life.

So a ``cursor`` with an ``anchor`` and a ``head`` is relayed only if each is a relative
position: a ``type`` or an ``item`` (ids of two whole numbers) or a ``tname`` (a string), and
an ``assoc`` (a whole number), each of them optional but not all three of the first; and a
``selection`` only as ``null`` or such an ``anchor`` and ``head``. Both are written out whole,
every field there (``null`` if it was left out): y-codemirror.next and y-monaco read the
fields as they are, and Yjs takes a missing one for a present one. Any other value is
dropped, and the others show no caret for that peer. A ``cursor`` without an anchor
or a head (``{"index": 3}``, say) is not one the bindings read: it is relayed as it is."""

from __future__ import annotations

__all__ = ["CARET_KEYS", "DROPPED", "caret_of"]

CARET_KEYS = ("cursor", "selection")
"""The keys of an awareness state that bindings keep a caret in."""

_MAX_NUMBER = 2**53 - 1  # the largest whole number JavaScript holds exactly

DROPPED = object()
"""What :func:`caret_of` answers for a caret that is not relayed."""


def caret_of(key: str, value: object) -> object:
    """What to relay of the caret ``value`` under ``key``: itself, its positions written out
    whole, or :data:`DROPPED` (nothing)."""
    if value is None:
        return None
    if isinstance(value, dict):
        anchor, head = value.get("anchor"), value.get("head")
        if key == "cursor" and (anchor is None or head is None):
            return value
        anchor, head = _position(anchor), _position(head)
        if anchor is not None and head is not None:
            return {**value, "anchor": anchor, "head": head}
        return DROPPED
    return value if key == "cursor" else DROPPED


def _position(value: object) -> dict[str, object] | None:
    """``value`` written out whole if it is a relative position, else ``None``."""
    if not isinstance(value, dict):
        return None
    kind, item, tname = value.get("type"), value.get("item"), value.get("tname")
    if kind is None and item is None and tname is None:
        return None  # Yjs throws on a position that names nothing
    assoc = value.get("assoc")
    valid = (
        (kind is None or _is_id(kind))
        and (item is None or _is_id(item))
        and (tname is None or (isinstance(tname, str) and len(tname) <= 256))
        and (assoc is None or _is_number(assoc, signed=True))
    )
    if not valid:
        return None
    return {"type": kind, "tname": tname, "item": item, "assoc": 0 if assoc is None else assoc}


def _is_id(value: object) -> bool:
    return (
        isinstance(value, dict)
        and _is_number(value.get("client"))
        and _is_number(value.get("clock"))
    )


def _is_number(value: object, *, signed: bool = False) -> bool:
    if isinstance(value, bool) or not isinstance(value, int):
        return False
    return (-_MAX_NUMBER if signed else 0) <= value <= _MAX_NUMBER
