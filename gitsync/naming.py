"""Branch names for participants.

Every participant owns the branch ``people/<slug>-<hash8>``:

- ``slug`` is the user id folded to lowercase ASCII (accents dropped by NFKD), every run of
  other characters replaced by one ``-``, trimmed of ``-`` and cut to 32 characters; ``user``
  when nothing is left (an id written only in CJK, say).
- ``hash8`` is the first 8 hex digits of the SHA-256 of the exact user id (UTF-8).

The slug keeps the name readable; the hash keeps it unique, so ``Alice`` and ``alice``, or
``bob`` and ``bob/x``, get different branches although their slugs may be equal.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

from protocol.names import validate_branch

__all__ = [
    "PARTICIPANT_PREFIX",
    "is_participant_branch",
    "participant_branch",
    "participant_of",
    "rescue_branch",
    "slugify",
]

PARTICIPANT_PREFIX = "people/"
MAX_SLUG = 32
_FALLBACK = "user"
_NOT_SLUG = re.compile(r"[^a-z0-9]+")
_PARTICIPANT_RE = re.compile(r"people/[a-z0-9]+(?:-[a-z0-9]+)*-[0-9a-f]{8}")
RESCUE_DIGITS = 7
"""Hex digits of the commit a rescue branch names (git's own abbreviation)."""


def slugify(text: str) -> str:
    """Return the readable ``[a-z0-9-]`` part of a participant branch name."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    slug = _NOT_SLUG.sub("-", ascii_text.lower()).strip("-")
    return slug[:MAX_SLUG].rstrip("-") or _FALLBACK


def participant_handle(user: str) -> str:
    """``<slug>-<hash>``: a readable name of user id ``user`` (non-empty) that no other user
    id shares (a slug alone is shared: ``Zoë`` and ``zoe``, or every name of non-Latin
    letters). The last part of the participant's branch, and of their commits' e-mail."""
    if not user:
        raise ValueError("a participant needs a non-empty user id")
    digest = hashlib.sha256(user.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{slugify(user)}-{digest}"


def participant_branch(user: str) -> str:
    """Return the branch of the participant whose user id is ``user`` (non-empty)."""
    return validate_branch(PARTICIPANT_PREFIX + participant_handle(user))


def is_participant_branch(name: str) -> bool:
    """Whether ``name`` has the shape of a name made by :func:`participant_branch`."""
    return _PARTICIPANT_RE.fullmatch(name) is not None


def participant_of(name: str) -> str | None:
    """The participant's own branch that ``name`` belongs to: the longest start of ``name``
    that ends where it does or before a ``-`` and has the shape of a participant's own
    branch (``people/alice-2bd806c9-fork-1`` belongs to ``people/alice-2bd806c9``, and
    ``people/alice-2bd806c9-x-4f6fb2ce-fork-1`` to user ``alice-2bd806c9-x``'s own branch,
    not to alice's); ``None`` if none has."""
    if not name.startswith(PARTICIPANT_PREFIX):
        return None
    ends = [len(name)] + [at for at in range(len(name) - 1, 0, -1) if name[at] == "-"]
    for end in ends:
        if _PARTICIPANT_RE.fullmatch(name, 0, end) is not None:
            return name[:end]
    return None


def rescue_branch(branch: str, commit: bytes | None) -> str:
    """The name of a branch that keeps live text of ``branch`` no commit of it could take,
    made from ``commit``: ``<branch>-rescued-<commit>`` (``<branch>-rescued`` without one).

    The commit is named by :data:`RESCUE_DIGITS` hex digits, not 8: under ``people/`` a name
    ending in a dash and 8 hex digits has the shape of a person's own branch, and would be
    taken for another person's (see :func:`participant_of`); a person's rescue branch is
    theirs, to open, edit and delete."""
    name = f"{branch}-rescued"
    return name if commit is None else f"{name}-{commit[:RESCUE_DIGITS].decode('ascii')}"
