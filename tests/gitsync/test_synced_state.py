"""The synced-state record: one line appended per commit, read back whole, compacted."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from dulwich.repo import Repo

from gitsync.fence import claim
from gitsync.objects import synced_state
from gitsync.objects.synced_state import read_synced_state, record_synced_state

BRANCH = "people/ann-0a1b2c3d"


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return Repo.init(str(tmp_path / "repo"), mkdir=True)


def _file(repo: Repo) -> Path:
    files = list(Path(repo.controldir(), *synced_state.DIRECTORY).iterdir())
    assert len(files) == 1
    return files[0]


def test_records_accumulate_and_later_ones_win(repo: Repo) -> None:
    assert read_synced_state(repo, BRANCH) == {}
    record_synced_state(repo, BRANCH, {"a.py": b"\x01\x02", "b.py": b"\x03"})
    record_synced_state(repo, BRANCH, {"b.py": b"\x04\x05"})
    assert read_synced_state(repo, BRANCH) == {"a.py": b"\x01\x02", "b.py": b"\x04\x05"}
    assert read_synced_state(repo, "main") == {}


def test_a_commit_appends_only_what_it_took(repo: Repo) -> None:
    many = {f"src/file{i}.py": bytes([1, i % 128, 9]) for i in range(2000)}
    record_synced_state(repo, BRANCH, many)
    before = _file(repo).stat().st_size
    record_synced_state(repo, BRANCH, {"src/file7.py": b"\x01\x07\x0a"})
    grown = _file(repo).stat().st_size - before
    assert 0 < grown < 100
    assert read_synced_state(repo, BRANCH) == {**many, "src/file7.py": b"\x01\x07\x0a"}


def test_a_line_torn_by_a_crash_is_passed_over_and_the_next_read_whole(
    repo: Repo, caplog: pytest.LogCaptureFixture
) -> None:
    record_synced_state(repo, BRANCH, {"a.py": b"\x01"})
    with _file(repo).open("ab") as f:
        f.write(b'{"branch":"people/ann-0a1b2c3d","paths":{"a.py":"AQ')  # no end: torn
    caplog.set_level(logging.WARNING)
    assert read_synced_state(repo, BRANCH) == {"a.py": b"\x01"}
    assert not caplog.records  # what a crash leaves is no damage
    record_synced_state(repo, BRANCH, {"b.py": b"\x02"})
    assert read_synced_state(repo, BRANCH) == {"a.py": b"\x01", "b.py": b"\x02"}
    assert not caplog.records


def test_a_damaged_line_is_passed_over_with_a_warning(
    repo: Repo, caplog: pytest.LogCaptureFixture
) -> None:
    record_synced_state(repo, BRANCH, {"a.py": b"\x01"})
    record_synced_state(repo, BRANCH, {"b.py": b"\x02"})
    record_synced_state(repo, BRANCH, {"c.py": b"\x03"})
    lines = _file(repo).read_bytes().split(b"\n")
    lines[1] = lines[1][:10] + b"\xff" + lines[1][11:]
    _file(repo).write_bytes(b"\n".join(lines))
    caplog.set_level(logging.WARNING)
    assert read_synced_state(repo, BRANCH) == {"a.py": b"\x01", "c.py": b"\x03"}
    assert any("damaged at line 2" in r.getMessage() for r in caplog.records)


def test_a_record_of_one_object_is_read_and_added_to(repo: Repo) -> None:
    """A record written whole, as one JSON object with no line end."""
    record_synced_state(repo, BRANCH, {"a.py": b"\x01"})
    _file(repo).write_bytes(
        b'{"branch":"people/ann-0a1b2c3d","paths":{"a.py":"AQ==","b.py":"Ag=="}}'
    )
    assert read_synced_state(repo, BRANCH) == {"a.py": b"\x01", "b.py": b"\x02"}
    record_synced_state(repo, BRANCH, {"b.py": b"\x03"})
    assert read_synced_state(repo, BRANCH) == {"a.py": b"\x01", "b.py": b"\x03"}


@pytest.mark.parametrize("fresh_process", [False, True])
def test_the_record_is_compacted_as_it_grows(
    repo: Repo, monkeypatch: pytest.MonkeyPatch, fresh_process: bool
) -> None:
    monkeypatch.setattr(synced_state, "COMPACT_AT", 4096)
    monkeypatch.setattr(synced_state, "_compacted", {})
    expected: dict[str, bytes] = {}
    largest = 0
    for i in range(3000):
        if fresh_process:
            synced_state._compacted.clear()
        states = {f"f{i % 7}.py": i.to_bytes(2, "big")}
        record_synced_state(repo, BRANCH, states)
        expected.update(states)
        largest = max(largest, _file(repo).stat().st_size)
    assert largest < 2 * 4096 + 200
    assert read_synced_state(repo, BRANCH) == expected
    assert not list(_file(repo).parent.glob("*.tmp"))


def test_a_repository_moved_away_is_not_made_again_as_a_skeleton(repo: Repo) -> None:
    """The engine's files are written inside the repository's git directory only: once the
    repository is moved away, a record is refused, and nothing is created where it was
    (which would stand in the way of moving it back); the fence likewise."""
    where = Path(repo.controldir())
    repo.close()
    where.rename(where.with_name("moved"))
    with pytest.raises(FileNotFoundError):
        record_synced_state(repo, BRANCH, {"a.py": b"\x01\x02"})
    with pytest.raises(FileNotFoundError):
        claim(where, BRANCH, 7)
    assert not where.exists()
    where.with_name("moved").rename(where)
    record_synced_state(repo, BRANCH, {"a.py": b"\x01\x02"})
    claim(where, BRANCH, 7)
    assert read_synced_state(repo, BRANCH) == {"a.py": b"\x01\x02"}
