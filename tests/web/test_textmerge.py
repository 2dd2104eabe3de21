"""The web editor's three-way merge of what was typed offline (``collab/web/src/
textmerge.js``), run by Node.js on its own: two pages that each pasted a long text while the
server was away and lost its store both get their edits back on the fresh copy, once each."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

WEB = Path(__file__).resolve().parents[2] / "collab" / "web"

# run from collab/web, whose node_modules hold @codemirror/state
SCRIPT = """
import { diff, offlineChanges } from './src/textmerge.js'
import { Text } from '@codemirror/state'
const apply = (text, changes) => changes.apply(Text.of(text.split('\\n'))).toString()
const cases = JSON.parse(process.argv[1])
const out = cases.map(({ base, pages }) => {
  let text = base // the fresh copy: each page in turn applies its offline edits to it
  for (const mine of pages) text = apply(text, offlineChanges(base, mine, text))
  return { merged: text, diffs: pages.map(mine => apply(base, diff(base, mine)) === mine) }
})
console.log(JSON.stringify(out))
"""


def run(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if shutil.which("node") is None or not (WEB / "node_modules").is_dir():
        pytest.fail("Node.js or collab/web's npm packages are missing: run `make setup`")
    done = subprocess.run(
        ["node", "--input-type=module", "-e", SCRIPT, json.dumps(cases)],
        cwd=WEB,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return list(json.loads(done.stdout))


def lines(prefix: str, count: int) -> str:
    return "".join(f"{prefix} {i:02d} {'x' * 25}\n" for i in range(count))


def edited(text: str, *changes: tuple[str, str]) -> str:
    for old, new in changes:
        assert old in text
        text = text.replace(old, new, 1)
    return text


def test_long_pastes_typed_offline_on_two_pages_are_merged_once_each() -> None:
    base = lines("line", 30)
    ann = edited(
        base, ("line 02", "line 02 ann"), ("line 27 ", lines("pasted by ann", 40) + "line 27 ")
    )
    bob = edited(
        base, ("line 04", "line 04 bob"), ("line 28 ", lines("pasted by bob", 40) + "line 28 ")
    )
    both = edited(
        ann, ("line 04", "line 04 bob"), ("line 28 ", lines("pasted by bob", 40) + "line 28 ")
    )
    # a page whose changes are many small ones all over, past the per-character limit too
    scattered = "".join(
        line.replace("x" * 25, "y" * 25) if i % 2 else line
        for i, line in enumerate(base.splitlines(keepends=True))
    )
    [pastes, alone, reverse] = run(
        [
            {"base": base, "pages": [ann, bob]},
            {"base": base, "pages": [scattered]},
            {"base": base, "pages": [bob, ann]},
        ]
    )
    assert pastes["diffs"] == [True, True]
    assert pastes["merged"] == both
    assert reverse["merged"] == both
    assert alone["merged"] == scattered and alone["diffs"] == [True]
