"""``--log-format json``: one JSON object per log line, from the formatter and from ``collab serve``."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from serverproc import ServerProcess

from collab.log_format import JsonFormatter


def _record(message: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom\nsecond line")
        except ValueError:
            exc_info = sys.exc_info()
    return logging.LogRecord("collab.test", logging.ERROR, __file__, 1, message, args, exc_info)


def test_a_record_is_one_line_of_json() -> None:
    line = JsonFormatter().format(_record("room %s: %d peers\nnext line", "démo/main:a.py", 3))
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "room démo/main:a.py: 3 peers\nnext line"
    assert entry["level"] == "ERROR"
    assert entry["logger"] == "collab.test"
    assert entry["time"].endswith("+00:00")
    assert "exception" not in entry


def test_exception_text_is_kept() -> None:
    line = JsonFormatter().format(_record("failed", exc=True))
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["exception"].startswith("Traceback (most recent call last):")
    assert entry["exception"].endswith("ValueError: boom\nsecond line")


async def test_collab_serve_writes_json_lines(repos: Path, tmp_path: Path) -> None:
    server = ServerProcess(repos, tmp_path / "data", extra_args=("--log-format", "json"))
    await server.start()
    await server.stop()
    lines = server.log.read_text().splitlines()
    entries = [json.loads(line) for line in lines]  # every line parses
    assert {"time", "level", "logger", "message"} <= set(entries[0])
    messages = [(e["level"], e["logger"], e["message"]) for e in entries]
    assert any(level == "WARNING" and "DEV MODE" in text for level, _, text in messages)
    assert any(
        logger == "collab.server" and text.startswith("serving") for _, logger, text in messages
    )
