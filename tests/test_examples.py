"""The examples run and print what they promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_two_editors_example_runs() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "two_editors.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "--- alice sees ---" in result.stdout
    alice = result.stdout.split("--- alice sees ---")[1].split("--- bob sees ---")[0]
    bob = result.stdout.split("--- bob sees ---")[1].split("alice sees bob's cursor")[0]
    assert alice == bob and "Alice was here" in alice and "Bob's line" in alice
    assert "'name': 'bob'" in result.stdout
