"""Tree entry names that a checkout on some filesystem would take for ``.git`` or a git file.

NTFS trims trailing dots and spaces, gives long names 8.3 short names (``git~1``) and reaches a
file's streams as ``name:stream``; HFS+ folds case and ignores some Unicode code points. So on
one machine or another ``.GIT``, ``.git.``, ``git~1``, ``.git::$INDEX_ALLOCATION`` and
``.g\\u200cit`` all open the repository's own ``.git``. A tree holding such a name lets whoever
pushed it write into the configuration (and so the hooks) of anyone who checks it out; git's
``fsck`` refuses them (``hasDotgit``), and so does :mod:`gitsync.objects.fsck`. The same
spellings of ``.gitmodules``, ``.gitattributes``, ``.gitignore`` and ``.mailmap`` are
recognised, so that those files' special checks cannot be dodged by a spelling.
"""

from __future__ import annotations

from collections.abc import Iterator

__all__ = [
    "DOT_FILES",
    "is_dotgit",
    "is_hfs_dot",
    "is_ntfs_dot",
    "is_ntfs_dotgit",
]

DOT_FILES = {
    b"gitmodules": b"gi7eba",
    b"gitattributes": b"gi7d29",
    b"gitignore": b"gi250a",
    b"mailmap": b"maba30",
}
"""Special files (without their leading dot) and the first six characters of the 8.3 short
name Windows derives from a hash of the long name when the plain short name is taken."""

_HFS_IGNORED = frozenset(
    [0x200C, 0x200D, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x206A, 0x2070), 0xFEFF]
)
"""Code points HFS+ drops from names when it compares them (joiners, direction marks)."""
_END = 0


def is_dotgit(name: bytes) -> bool:
    """Whether a tree entry ``name`` is ``.git`` on some filesystem: in the HFS+ or NTFS
    spellings, and also after any backslash (a directory separator on Windows)."""
    if is_hfs_dot(name, b"git") or is_ntfs_dotgit(name):
        return True
    return any(is_ntfs_dotgit(part) for part in name.split(b"\\")[1:])


def _hfs_chars(name: bytes) -> Iterator[int]:
    """The code points of ``name`` as HFS+ compares them; a malformed UTF-8 sequence ends the
    name (it cannot be one of the ASCII needles, and what came before decides)."""
    for char in name.decode("utf-8", "surrogateescape"):
        point = ord(char)
        if 0xDC80 <= point <= 0xDCFF:  # a byte that was not valid UTF-8
            return
        if point not in _HFS_IGNORED:
            yield point


def is_hfs_dot(name: bytes, needle: bytes) -> bool:
    """Whether HFS+ takes ``name`` for ``.`` + ``needle`` (lower-case ASCII): case folded,
    ignorable code points dropped."""
    chars = _hfs_chars(name)
    if next(chars, _END) != ord("."):
        return False
    for expected in needle:
        point = next(chars, _END)
        if point > 127 or chr(point).lower() != chr(expected):
            return False
    return next(chars, _END) in (_END, ord("/"))


def _only_dots_and_spaces(rest: bytes) -> bool:
    """What NTFS trims from the end of a name, up to a stream separator ``:``."""
    for byte in rest:
        if byte == ord(":"):
            return True
        if byte not in b". ":
            return False
    return True


def is_ntfs_dotgit(name: bytes) -> bool:
    """Whether NTFS takes ``name`` for ``.git``: ``.git`` in any case or its short name
    ``git~1``, then only dots and spaces up to the end, a separator or a stream name."""
    lower = name.lower()
    if lower.startswith(b".git"):
        rest = name[4:]
    elif lower.startswith(b"git~1"):
        rest = name[5:]
    else:
        return False
    for byte in rest:
        if byte in b"/\\:":
            return True
        if byte not in b". ":
            return False
    return True


def is_ntfs_dot(name: bytes, needle: bytes) -> bool:
    """Whether NTFS takes ``name`` for ``.`` + ``needle``, one of :data:`DOT_FILES`: the long
    name, its plain short name (six characters, ``~1`` to ``~4``) or its hashed short name."""
    lower = name.lower()
    if lower.startswith(b"." + needle):
        return _only_dots_and_spaces(name[1 + len(needle) :])
    if lower.startswith(needle[:6]) and name[6:7] == b"~" and name[7:8] in (b"1", b"2", b"3", b"4"):
        return _only_dots_and_spaces(name[8:])
    return _is_hashed_short_name(name, DOT_FILES[needle]) and _only_dots_and_spaces(name[8:])


def _is_hashed_short_name(name: bytes, prefix: bytes) -> bool:
    """Whether the first eight bytes of ``name`` are a hashed 8.3 short name: up to six bytes
    of ``prefix``, ``~``, a digit 1-9, then digits."""
    if len(name) < 8:
        return False
    tilde = name.find(b"~", 0, 7)
    if tilde < 0 or name[:tilde].lower() != prefix[:tilde]:
        return False
    digits = name[tilde + 1 : 8]
    return b"1" <= digits[:1] <= b"9" and digits.isdigit()
