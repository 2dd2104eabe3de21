"""The status line and the JSON event stream of ``collab sync``."""

from __future__ import annotations

import io
import json
from pathlib import Path

from conftest import MakeTree

from collab import Client, CollabServer
from collab.disk import Counters, json_lines, status_line


def test_status_line_counts_and_conflicts() -> None:
    counters = Counters(synced=12, pending=3)
    out = io.StringIO()
    report = status_line(counters, out)
    report({"event": "status"})
    report({"event": "status"})  # unchanged: not printed again
    counters.conflicts = 1
    report({"event": "conflict", "path": "a.py", "reason": "changed on disk and live"})
    lines = out.getvalue().splitlines()
    assert lines == [
        "12 files synced, 3 pending, 0 with conflicts",
        "conflict in a.py: changed on disk and live",
        "12 files synced, 3 pending, 1 with conflicts",
    ]


def test_status_line_tells_when_the_sync_pauses_and_goes_on() -> None:
    out = io.StringIO()
    report = status_line(Counters(synced=2), out)
    message = "wt has feature checked out, not main: the sync is paused until main is checked out"
    report({"event": "paused", "checked_out": "feature", "message": message})
    report({"event": "resumed", "branch": "main"})
    assert out.getvalue().splitlines() == [
        message,
        "2 files synced, 0 pending, 0 with conflicts",
        "main is checked out again: the sync goes on",
    ]


def test_json_lines_are_one_object_each() -> None:
    out = io.StringIO()
    report = json_lines(out)
    report({"event": "sync", "path": "a.py", "direction": "disk->live", "conflict": False})
    event = json.loads(out.getvalue())
    assert event["event"] == "sync" and event["path"] == "a.py" and "time" in event


async def test_events_of_a_sync(server: CollabServer, make_tree: MakeTree, tmp_path: Path) -> None:
    root = tmp_path / "wt"
    tree = make_tree(root)
    await tree.start()
    (root / "README.md").write_text("# Demo\n\nedited\n")
    async with Client(server.url, user="bob") as bob:
        doc = await bob.open("demo/main:README.md")
        await doc.wait_for(lambda t: "edited" in t)
        doc.insert(0, "# top\n")
        await tree.wait_idle()
        while "# top" not in (root / "README.md").read_text():
            await tree.wait_idle()
    events = tree.events  # type: ignore[attr-defined]
    assert events.of("ready")[0]["branch"] == "main" and events.of("ready")[0]["cloned"]
    directions = [e["direction"] for e in events.of("sync") if e["path"] == "README.md"]
    assert directions[0] == "disk->live" and "live->disk" in directions
    assert tree.counters.synced == 3 and tree.counters.pending == 0
