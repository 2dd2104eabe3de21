"""``gitsync.wire.pack_bounds``: a pushed pack's objects are measured, expanded, before it
is indexed; packs that would expand past a bound are refused without being expanded."""

from __future__ import annotations

import io
import subprocess
import tracemalloc
import zlib
from pathlib import Path

import pytest
from packbuild import BLOB, MIB, blob, copies_of, object_header, pack

from gitsync.wire.pack_bounds import PackRefused, check_pack_bounds


def check(data: bytes, *, max_object: int = 8 * MIB, max_total: int = 64 * MIB) -> int:
    """Check ``data``; the length of its header and objects."""
    return check_pack_bounds(io.BytesIO(data), max_object=max_object, max_total=max_total)


def test_a_pack_git_wrote_passes_and_is_read_to_its_objects_end(tmp_path: Path) -> None:
    def git(*args: str) -> bytes:
        return subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True).stdout

    git("init", "-q")
    text = "".join(f"line {n}\n" for n in range(2000))
    for n in range(3):  # similar versions: git writes deltas between them
        (tmp_path / "a.txt").write_text(text + f"edit {n}\n")
        (tmp_path / "b.bin").write_bytes(bytes(range(256)) * (n + 1))
        git("add", "-A")
        git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", f"c{n}")
    listed = git("rev-list", "--objects", "--all")
    data = subprocess.run(
        ["git", "pack-objects", "--stdout", "--delta-base-offset"],
        cwd=tmp_path,
        input=listed,
        check=True,
        capture_output=True,
    ).stdout
    assert check(data) == len(data) - 20  # up to the trailer, every object read


def test_a_delta_whose_result_passes_the_bound_is_refused_unexpanded() -> None:
    base = bytes(MIB)
    bomb = pack(blob(base), copies_of(base, 512))  # a few kilobytes, 512 MiB expanded
    assert len(bomb) < 8 * 1024
    tracemalloc.start()
    try:
        with pytest.raises(PackRefused, match="result is 536870912 bytes"):
            check(bomb, max_object=100 * MIB)
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * MIB


def test_an_object_over_the_bound_is_refused_by_its_header() -> None:
    with pytest.raises(PackRefused, match="object of 2097152 bytes"):
        check(pack(blob(bytes(2 * MIB))), max_object=MIB)
    assert check(pack(blob(bytes(MIB))), max_object=MIB) > 0  # at the bound: taken


def test_objects_over_the_bound_in_all_are_refused() -> None:
    three = pack(blob(bytes(MIB)), blob(b"\1" * MIB), blob(b"\2" * MIB))
    with pytest.raises(PackRefused, match="in all"):
        check(three, max_object=MIB, max_total=2 * MIB + MIB // 2)
    check(three, max_object=MIB, max_total=3 * MIB)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (pack(blob(bytes(MIB), declared=10)), "larger than its header says"),
        (pack(blob(b"abc", declared=10)), "smaller than its header says"),
        (pack(blob(b"abc"))[:-25], "ends inside"),
        (b"PACK" + (9).to_bytes(4, "big") + bytes(4), "version"),
        (pack(object_header(5, 3) + zlib.compress(b"abc")), "unknown type 5"),
        (pack(object_header(BLOB, 3) + b"not zlib data"), "does not inflate"),
    ],
    ids=["longer", "shorter", "truncated", "version", "type", "not-zlib"],
)
def test_a_pack_that_does_not_read_as_one_is_refused(data: bytes, reason: str) -> None:
    with pytest.raises(PackRefused, match=reason):
        check(data)
