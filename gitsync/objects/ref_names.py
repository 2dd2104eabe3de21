"""Which new ref names a repository can take beside the refs it has.

Git keeps a ref as a file under ``refs/`` (or a line of ``packed-refs``), so ``refs/heads/a``
and ``refs/heads/a/b`` cannot both exist: git refuses to create either beside the other, and a
repository that holds both (possible once one of them is packed) cannot be cloned. The
participants' branches live under ``people/``, so a branch named ``people`` is reserved.
"""

from __future__ import annotations

from dulwich.refs import Ref, RefsContainer

from ..naming import PARTICIPANT_PREFIX

__all__ = ["RefClash", "check_new_ref", "new_ref_problem"]

RESERVED = b"refs/heads/" + PARTICIPANT_PREFIX.rstrip("/").encode()
"""``refs/heads/people``: it would hold every participant's branch out."""


class RefClash(ValueError):
    """A ref cannot be created beside the refs the repository has."""


def new_ref_problem(refs: RefsContainer, ref: bytes) -> str | None:
    """Why ``ref`` cannot be created beside ``refs`` (loose and packed alike), as git would
    put it; None if it can. A ref that exists already is not a problem here."""
    if ref == RESERVED:
        return (
            f"{PARTICIPANT_PREFIX.rstrip('/')!r} is reserved: the participants' branches are "
            f"{PARTICIPANT_PREFIX}<name>"
        )
    parts = ref.split(b"/")
    for end in range(2, len(parts)):  # refs/heads/a, for refs/heads/a/b
        folder = b"/".join(parts[:end])
        if refs.read_ref(Ref(folder)) is not None:
            return f"'{_text(folder)}' exists; cannot create '{_text(ref)}'"
    inside = refs.keys(base=Ref(ref + b"/"))
    if inside:
        first = ref + b"/" + min(inside)
        return f"'{_text(first)}' exists; cannot create '{_text(ref)}'"
    return None


def check_new_ref(refs: RefsContainer, ref: bytes) -> None:
    """Raise :class:`RefClash` if ``ref`` cannot be created beside ``refs``."""
    problem = new_ref_problem(refs, ref)
    if problem is not None:
        raise RefClash(problem)


def _text(ref: bytes) -> str:
    return ref.decode("utf-8", "replace")
