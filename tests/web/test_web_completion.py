"""Ghost text in the web editor: offered after a pause, Tab inserts it through the server
(so the other browser sees it), Esc or typing dismisses it."""

from __future__ import annotations

import re

import pytest
from chromium import Chromium
from pages import YTEXT, open_page

from collab import CollabServer

pytestmark = pytest.mark.browser

DOC = "demo/main:src/app.py"  # "print('hello')\n": the local model completes from it
GHOST = "() => document.querySelector('.cm-ghost')?.textContent ?? null"


async def test_ghost_text_appears_tab_inserts_it_and_the_other_browser_sees_it(
    server: CollabServer, chromium: Chromium
) -> None:
    http = f"http://127.0.0.1:{server.port}"
    for page in ("alice", "bob"):
        await open_page(chromium, page, http, DOC)
    await chromium.click("alice", ".cm-content")
    await chromium.press("alice", "Control+End")
    await chromium.type("alice", "pri")
    ghost = await chromium.wait("alice", GHOST)
    assert ghost, "an empty ghost text is never shown"
    status = await chromium.eval(
        "alice", "() => document.querySelector('#ghost-status').textContent"
    )
    assert re.match(r"completion in \d+ ms", status), status
    await chromium.screenshot("alice", "ghost-text")
    before = await chromium.eval("alice", YTEXT)
    assert ghost not in before.removeprefix("print('hello')\n")

    await chromium.press("alice", "Tab")
    expected = before + ghost
    await chromium.wait("alice", f"(want) => ({YTEXT})() === want", expected)
    await chromium.wait("bob", f"(want) => ({YTEXT})() === want", expected)
    assert await chromium.eval("alice", GHOST) is None
    # the cursor follows the accepted text
    head = await chromium.eval("alice", "() => window.collab.editor.view.state.selection.main.head")
    assert head == len(expected.encode("utf-16-le")) // 2
    await chromium.screenshot("bob", "ghost-accepted")

    # Esc dismisses, and so does typing; neither changes the document
    await chromium.type("alice", "\npri")
    await chromium.wait("alice", GHOST)
    await chromium.press("alice", "Escape")
    await chromium.wait("alice", f"() => ({GHOST})() === null")
    await chromium.type("alice", "n")
    typed = expected + "\nprin"
    await chromium.wait("alice", f"() => ({GHOST})() === null")
    await chromium.wait("bob", f"(want) => ({YTEXT})() === want", typed)
