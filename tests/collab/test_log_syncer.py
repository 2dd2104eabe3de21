"""``LogSyncer``: waiters are released after an fsync that covers their writes, in groups."""

from __future__ import annotations

import pathlib
import queue
import time

import pytest

from collab.store.log_syncer import LogSyncer

Released = queue.SimpleQueue[tuple[list[str], BaseException | None]]


def _syncer(path: pathlib.Path, window: float = 0.0) -> tuple[LogSyncer[str], Released]:
    released: Released = queue.SimpleQueue()
    syncer: LogSyncer[str] = LogSyncer(
        path, window=window, release=lambda group, error: released.put((group, error)), name="t"
    )
    syncer.start()
    return syncer, released


@pytest.fixture
def log(tmp_path: pathlib.Path) -> pathlib.Path:
    """A file written to, for the syncer to fsync."""
    path = tmp_path / "log"
    path.write_bytes(b"written")
    return path


def test_a_waiter_is_released_only_once_its_writes_are_done(log: pathlib.Path) -> None:
    syncer, released = _syncer(log)
    try:
        syncer.wrote(1)
        syncer.wait(1, "after one")
        syncer.wait(2, "after two")
        assert released.get(timeout=5) == (["after one"], None)
        time.sleep(0.05)
        assert released.empty()  # its second write has not returned yet
        syncer.wrote(1)
        assert released.get(timeout=5) == (["after two"], None)
        assert syncer.syncs == 2
        syncer.wait(2, "nothing new")  # covered by the last fsync: released without another
        assert released.get(timeout=5) == (["nothing new"], None)
        assert syncer.syncs == 2
    finally:
        syncer.stop()


def test_a_waiter_after_a_quiet_spell_is_synced_at_once(log: pathlib.Path) -> None:
    syncer, released = _syncer(log, window=10.0)
    try:
        started = time.monotonic()
        syncer.wrote(1)
        syncer.wait(1, "alone")
        assert released.get(timeout=5) == (["alone"], None)
        assert time.monotonic() - started < 5  # not held for the window
        assert syncer.syncs == 1
    finally:
        syncer.stop()


def test_waiters_within_a_window_share_one_fsync(log: pathlib.Path) -> None:
    syncer, released = _syncer(log, window=0.2)
    try:
        syncer.wrote(1)
        syncer.wait(1, "first")
        assert released.get(timeout=5) == (["first"], None)
        first_synced = time.monotonic()
        for i in range(10):
            syncer.wrote(1)
            syncer.wait(i + 2, f"w{i}")
        group, error = released.get(timeout=5)
        assert time.monotonic() - first_synced >= 0.15  # held until the window had passed
        assert (group, error) == ([f"w{i}" for i in range(10)], None)
        assert syncer.syncs == 2
    finally:
        syncer.stop()


def test_stop_fails_waiters_whose_writes_never_returned(log: pathlib.Path) -> None:
    syncer, released = _syncer(log, window=10.0)
    syncer.wrote(1)
    syncer.wait(1, "done")
    syncer.wait(2, "never written")
    syncer.stop()  # no window wait
    assert released.get(timeout=5) == (["done"], None)
    group, error = released.get(timeout=5)
    assert group == ["never written"] and isinstance(error, RuntimeError)
    assert syncer.syncs == 1
    syncer.wait(1, "too late")
    group, error = released.get(timeout=5)
    assert group == ["too late"] and isinstance(error, RuntimeError)


def test_a_missing_file_is_a_failed_fsync(tmp_path: pathlib.Path) -> None:
    syncer, released = _syncer(tmp_path / "missing")
    try:
        syncer.wrote(1)
        syncer.wait(1, "w")
        group, error = released.get(timeout=5)
        assert group == ["w"] and isinstance(error, FileNotFoundError)
    finally:
        syncer.stop()
