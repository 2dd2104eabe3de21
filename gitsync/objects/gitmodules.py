"""The checks git's fsck makes of a ``.gitmodules`` blob: submodule names, urls, paths and
update commands that would make a recursive clone write outside the submodule directory, run a
command, or hand a crafted url to a transport (CVE-2018-11235, CVE-2018-17456, CVE-2020-11008).

The blob is read in git's configuration syntax by :func:`config_entries`. A blob that is not
valid configuration is not refused for that (git only notes it); the entries before the error
are still checked, as git checks them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import unquote_to_bytes, urlsplit

__all__ = ["config_entries", "gitmodules_problems"]

_KEY_CHARS = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")
_SPACE = frozenset(b" \t\n\v\f\r")
_ESCAPES = {ord("t"): ord("\t"), ord("b"): ord("\b"), ord("n"): ord("\n")}
_BOM = b"\xef\xbb\xbf"
_NL = ord("\n")


class _Source:
    """The characters of a configuration text, as git's parser reads them: CR LF as LF, and
    a LF at the end."""

    def __init__(self, text: bytes) -> None:
        self.text = text
        self.pos = 0
        self.eof = False

    def next(self) -> int:
        if self.pos >= len(self.text):
            self.eof = True
            return _NL
        c = self.text[self.pos]
        self.pos += 1
        if c == ord("\r") and self.text[self.pos : self.pos + 1] == b"\n":
            self.pos += 1
            return _NL
        return c


class _BadConfig(Exception):
    pass


def config_entries(text: bytes) -> Iterator[tuple[bytes, bytes | None]]:
    """The ``(section.subsection.key, value)`` entries of a configuration text in order (a key
    without ``=`` has the value None), up to the first syntax error."""
    src = _Source(text.removeprefix(_BOM))
    section = b""
    comment = False
    try:
        while True:
            c = src.next()
            if c == _NL:
                if src.eof:
                    return
                comment = False
            elif comment or c in _SPACE:
                continue
            elif c in b"#;":
                comment = True
            elif c == ord("["):
                section = _section(src)
            elif chr(c).isascii() and chr(c).isalpha():
                yield _entry(src, section, c)
            else:
                return
    except _BadConfig:
        return


def _section(src: _Source) -> bytes:
    name = bytearray()
    while True:
        c = src.next()
        if src.eof:
            raise _BadConfig
        if c == ord("]"):
            break
        if c in _SPACE:
            name += b"." + _subsection(src, c)
            break
        if c not in _KEY_CHARS and c != ord("."):
            raise _BadConfig
        name.append(c | 0x20 if 65 <= c <= 90 else c)
    if not name:
        raise _BadConfig
    return bytes(name) + b"."


def _subsection(src: _Source, c: int) -> bytes:
    """The quoted subsection of ``[section "subsection"]``, after the space."""
    while c in _SPACE:
        if c == _NL:
            raise _BadConfig
        c = src.next()
    if c != ord('"'):
        raise _BadConfig
    name = bytearray()
    while True:
        c = src.next()
        if c == _NL:
            raise _BadConfig
        if c == ord('"'):
            break
        if c == ord("\\"):
            c = src.next()
            if c == _NL:
                raise _BadConfig
        name.append(c)
    if src.next() != ord("]"):
        raise _BadConfig
    return bytes(name)


def _entry(src: _Source, section: bytes, c: int) -> tuple[bytes, bytes | None]:
    key = bytearray([c | 0x20 if 65 <= c <= 90 else c])
    while True:
        c = src.next()
        if src.eof or c not in _KEY_CHARS:
            break
        key.append(c | 0x20 if 65 <= c <= 90 else c)
    while c in b" \t":
        c = src.next()
    if c == _NL:
        return section + bytes(key), None
    if c != ord("="):
        raise _BadConfig
    return section + bytes(key), _value(src)


def _value(src: _Source) -> bytes:
    value = bytearray()
    quote = comment = False
    trim = 0
    while True:
        c = src.next()
        if c == _NL:
            if quote:
                raise _BadConfig
            return bytes(value[:trim] if trim else value)
        if comment:
            continue
        if c in _SPACE and not quote:
            if not trim:
                trim = len(value)
            if value:
                value.append(c)
            continue
        if not quote and c in b";#":
            comment = True
            continue
        trim = 0
        if c == ord("\\"):
            c = src.next()
            if c == _NL:
                continue
            if c in _ESCAPES:
                c = _ESCAPES[c]
            elif c not in b'\\"':
                raise _BadConfig
            value.append(c)
        elif c == ord('"'):
            quote = not quote
        else:
            value.append(c)


def gitmodules_problems(text: bytes) -> Iterator[tuple[str, str]]:
    """``(fsck message id, message)`` for each disallowed setting of a ``.gitmodules`` blob."""
    for var, value in config_entries(text):
        if not var.startswith(b"submodule."):
            continue
        name, dot, key = var[len(b"submodule.") :].rpartition(b".")
        if not dot:
            continue  # no subsection: not about a submodule
        shown = name.decode("utf-8", "replace")
        if not _name_allowed(name):
            yield "gitmodulesName", f"disallowed submodule name: {shown}"
        if value is None:
            continue
        text_value = value.decode("utf-8", "replace")
        if key == b"url" and not _url_allowed(value):
            yield "gitmodulesUrl", f"disallowed submodule url: {text_value}"
        if key == b"path" and value.startswith(b"-"):
            yield "gitmodulesPath", f"disallowed submodule path: {text_value}"
        if key == b"update" and value.startswith(b"!"):
            yield "gitmodulesUpdate", f"disallowed submodule update setting: {text_value}"


def _name_allowed(name: bytes) -> bool:
    """Not empty, and no ``..`` component (either slash separates components)."""
    return bool(name) and b".." not in re.split(rb"[/\\]", name)


_DOT_SLASH = re.compile(rb"\.[/\\]")
_DOT_DOT_SLASH = re.compile(rb"\.\.[/\\]")
_CURL_PREFIXES = (b"http::", b"https::", b"ftp::", b"ftps::")
_CURL_SCHEMES = (b"http://", b"https://", b"ftp://", b"ftps://")


def _url_allowed(url: bytes) -> bool:
    if url.startswith(b"-"):  # would be read as an option
        return False
    if _DOT_SLASH.match(url) or _DOT_DOT_SLASH.match(url) or url.startswith(b"git://"):
        if b"\n" in unquote_to_bytes(url):
            return False
        rest, dotdots = url, 0
        while True:
            if _DOT_DOT_SLASH.match(rest):
                rest, dotdots = rest[3:], dotdots + 1
            elif _DOT_SLASH.match(rest):
                rest = rest[2:]
            else:
                break
        # "../" that climbs out of the superproject's url into its host or scheme
        return not (dotdots and rest[:1] in (b":", b"/"))
    for prefix in _CURL_PREFIXES:
        if url.startswith(prefix):
            return _curl_url_allowed(url[len(prefix) :])
    if url.startswith(_CURL_SCHEMES):
        return _curl_url_allowed(url)
    return True


def _curl_url_allowed(url: bytes) -> bool:
    """A url handed to curl must have a host and decode to no control characters."""
    decoded = unquote_to_bytes(url)
    if any(c < 0x20 or c == 0x7F for c in decoded):
        return False
    try:
        parts = urlsplit(url.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return False
    return bool(parts.hostname)
