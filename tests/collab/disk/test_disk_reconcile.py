"""The per-file decision of the sync, on its own: which side changes, and how."""

from __future__ import annotations

from collab.disk.reconcile import reconcile, stale_base

BASE = "a\nb\nc\nd\ne\n"


def test_only_the_side_that_moved_is_taken() -> None:
    assert reconcile(BASE, BASE, BASE).direction == "none"
    disk = reconcile(BASE, BASE.replace("b", "B"), BASE)
    assert (disk.live, disk.disk, disk.direction) == (BASE.replace("b", "B"), None, "disk->live")
    live = reconcile(BASE, BASE, BASE.replace("d", "D"))
    assert (live.live, live.disk, live.direction) == (None, BASE.replace("d", "D"), "live->disk")
    same = reconcile(BASE, "x\n", "x\n")
    assert (same.live, same.disk, same.base) == (None, None, "x\n")


def test_both_moved_apart_merge_cleanly() -> None:
    outcome = reconcile(BASE, BASE.replace("a", "A"), BASE.replace("e", "E"))
    assert outcome.base == "A\nb\nc\nd\nE\n" == outcome.live == outcome.disk
    assert not outcome.conflict and outcome.direction == "merged"


def test_both_changed_one_line_conflicts_on_both_sides() -> None:
    outcome = reconcile(BASE, BASE.replace("c", "disk"), BASE.replace("c", "live"))
    assert outcome.conflict
    assert "<<<<<<< disk\ndisk\n=======\nlive\n>>>>>>> live\n" in outcome.base
    assert outcome.live == outcome.disk == outcome.base


def test_a_save_is_merged_against_the_text_it_was_made_from() -> None:
    written = BASE.replace("e", "e remote")  # the syncer wrote a remote edit over BASE
    assert stale_base(BASE.replace("a", "a saved"), [BASE, written]) == BASE  # buffer lacked it
    assert stale_base(written.replace("a", "a saved"), [BASE, written]) == written  # reloaded


def test_a_stale_save_after_several_writes_is_made_from_the_oldest() -> None:
    """Two writes in a row, then a save of a buffer that had neither: merged against what
    the first write replaced, it keeps both."""
    first = "a 1\nb\nc\nd\ne\n"
    second = "a 1\nb\nc\nd\ne 2\n"
    saved = BASE.replace("c", "c saved")
    base = stale_base(saved, [BASE, first, second])
    assert base == BASE
    assert reconcile(base, saved, second).base == "a 1\nb\nc saved\nd\ne 2\n"


def test_a_stale_save_of_the_line_a_write_changed_conflicts_instead_of_undoing_it() -> None:
    written = BASE.replace("c", "c remote")
    saved = BASE.replace("c", "c saved")
    base = stale_base(saved, [BASE, written])
    assert base == BASE
    outcome = reconcile(base, saved, written)
    assert outcome.conflict and "c remote" in outcome.base and "c saved" in outcome.base


def test_classic_mac_line_endings_merge_line_by_line() -> None:
    """A file whose lines end in a bare CR merges at its CRs: edits apart stay apart, and a
    conflict's markers end in CR too (no LF is added to the file)."""
    base = BASE.replace("\n", "\r")
    outcome = reconcile(base, base.replace("a", "A"), base.replace("e", "E"))
    assert (outcome.base, outcome.conflict) == ("A\rb\rc\rd\rE\r", False)
    clash = reconcile(base, base.replace("c", "disk"), base.replace("c", "live"))
    assert clash.conflict
    assert "b\r<<<<<<< disk\rdisk\r=======\rlive\r>>>>>>> live\rd\r" in clash.base
    assert "\n" not in clash.base


def test_crlf_conflict_markers_end_in_crlf() -> None:
    base = BASE.replace("\n", "\r\n")
    clash = reconcile(base, base.replace("c", "disk"), base.replace("c", "live"))
    assert "b\r\n<<<<<<< disk\r\ndisk\r\n=======\r\nlive\r\n>>>>>>> live\r\nd\r\n" in clash.base
