"""What the report commands print: shown by the terminal, never obeyed, in columns that line
up whatever the script of the names."""

from __future__ import annotations

import pytest

from collab.cli.branch_commands import table
from collab.cli.terminal import columns, one_line, shown


def test_controls_and_bidi_controls_are_shown_as_escapes_and_the_rest_is_kept() -> None:
    assert shown("a\x1b[2Jb\x07\u202ec\u2066") == "a\\x1b[2Jb\\x07\\u202ec\\u2066"
    assert shown("tab\tand\nline, 日本, e\u0301") == "tab\tand\nline, 日本, e\u0301"
    assert shown("\x9b31m") == "\\x9b31m"  # the one-byte CSI of C1
    assert shown("a\u2028b\x85") == "a\\u2028b\\x85"  # line separators, NEL


def test_a_path_stays_on_its_line() -> None:
    forged = "notes.txt\n  modified  README.md (safe)\tx"
    assert one_line(forged) == "notes.txt\\x0a  modified  README.md (safe)\\x09x"


def test_columns_line_up_with_wide_and_zero_width_names(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert columns("日本") == 4 and columns("e\u0301") == 1 and columns("a\u200bb") == 2
    table([["main", "x"], ["功能分支", "y"], ["cafe\u0301", "z"]])
    lines = capsys.readouterr().out.splitlines()
    assert [columns(line[: line.rindex(" ") + 1]) for line in lines] == [10, 10, 10]
