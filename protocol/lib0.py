"""lib0 variable-length encoding (the wire format of y-protocols), with explicit limits."""

from __future__ import annotations

from .errors import ErrorCode, ProtocolError

__all__ = ["MAX_SAFE_INTEGER", "Reader", "write_var_bytes", "write_var_string", "write_var_uint"]

MAX_SAFE_INTEGER = 2**53 - 1
"""The largest number a stock (JavaScript) client reads exactly (``Number.MAX_SAFE_INTEGER``):
lib0 numbers past it are read as other numbers."""
_MAX_VARUINT_BYTES = 8  # 56 bits; lib0 numbers are at most 53 bits


def write_var_uint(out: bytearray, value: int) -> None:
    """Append ``value`` (>= 0) as a lib0 varuint."""
    if value < 0:
        raise ValueError("varuint must be non-negative")
    while value > 0x7F:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)


def write_var_bytes(out: bytearray, data: bytes) -> None:
    """Append ``data`` prefixed by its length (lib0 ``writeVarUint8Array``)."""
    write_var_uint(out, len(data))
    out += data


def write_var_string(out: bytearray, text: str) -> None:
    """Append ``text`` as UTF-8 prefixed by its byte length (lib0 ``writeVarString``)."""
    write_var_bytes(out, text.encode("utf-8"))


class Reader:
    """Reads lib0-encoded values from a buffer; raises ``ProtocolError`` on anything short."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def at_end(self) -> bool:
        return self._pos >= len(self._data)

    def read_var_uint(self) -> int:
        data = self._data
        pos = self._pos
        if pos < len(data) and data[pos] < 0x80:  # one byte: lengths, counts, message kinds
            self._pos = pos + 1
            return data[pos]
        value = 0
        shift = 0
        for _ in range(_MAX_VARUINT_BYTES):
            if self._pos >= len(data):
                raise ProtocolError(ErrorCode.MALFORMED, "truncated varuint")
            byte = data[self._pos]
            self._pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7
        raise ProtocolError(ErrorCode.MALFORMED, "varuint too long")

    def read_var_bytes(self, limit: int) -> bytes:
        length = self.read_var_uint()
        if length > limit:
            raise ProtocolError(ErrorCode.TOO_LARGE, f"declared length {length} over limit {limit}")
        start = self._pos
        end = start + length
        if end > len(self._data):
            raise ProtocolError(
                ErrorCode.MALFORMED, f"declared length {length} but {self.remaining} bytes left"
            )
        self._pos = end
        return self._data[start:end]

    def read_var_string(self, limit: int) -> str:
        raw = self.read_var_bytes(limit)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(ErrorCode.MALFORMED, "string is not UTF-8") from exc

    def read_rest(self) -> bytes:
        rest = self._data[self._pos :]
        self._pos = len(self._data)
        return rest
