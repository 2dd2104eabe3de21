"""Which colours a peer's awareness state may carry to the others.

Editor bindings paint each remote cursor with its state's ``user.color`` (and
``user.colorLight``), most of them by writing the value into a ``style`` attribute as it is:
y-codemirror.next and y-monaco do. A value such as ``red; position: fixed; inset: 0;
background: url(...)`` then covers every other peer's page and fetches what its sender names,
so the server relays only values that are nothing but a colour: ``#`` and 3, 4, 6 or 8 hex
digits, ``rgb()``/``rgba()``/``hsl()``/``hsla()`` of numbers, or a colour's name. Any other
value is dropped (the bindings then use their default colour)."""

from __future__ import annotations

import re

__all__ = ["COLOUR_KEYS", "is_colour"]

COLOUR_KEYS = ("color", "colorLight")
"""The keys of ``user`` that bindings paint with."""

_COLOUR = re.compile(
    r"#(?:[0-9a-f]{3,4}|[0-9a-f]{6}|[0-9a-f]{8})"
    r"|(?:rgb|hsl)a?\((?:[-+0-9.e%, /]|deg|turn|rad)*\)"
    r"|[a-z]{3,20}",
    re.IGNORECASE,
)


def is_colour(value: object) -> bool:
    """Whether ``value`` is a CSS colour and nothing else."""
    return isinstance(value, str) and len(value) <= 64 and _COLOUR.fullmatch(value) is not None
