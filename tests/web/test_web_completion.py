"""Ghost text in the web editor: offered after a pause, Tab inserts it through the server
(so the other browser sees it), Esc or typing dismisses it."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import pytest
from chromium import Chromium
from pages import YTEXT, open_page
from servers import make_config

from collab import CollabServer

sys.path.insert(0, str(Path(__file__).parents[1] / "completion"))
from fake_backends import FakeBackend

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
    # the cursor follows the accepted text once the server has answered the accept (the
    # text itself may arrive before that answer)
    end = len(expected.encode("utf-16-le")) // 2
    await chromium.wait(
        "alice", "(end) => window.collab.editor.view.state.selection.main.head === end", end
    )
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


async def test_a_stale_request_is_cancelled_and_never_shown(
    repos: Path, tmp_path: Path, chromium: Chromium
) -> None:
    # the first request takes 2 s; typing meanwhile makes it stale
    backend = FakeBackend("_stale_or_fresh", delays=[2.0])
    server = CollabServer(make_config(repos, tmp_path / "data", completion_backend="none"))
    server.completion.backend = backend
    async with server:
        await open_page(chromium, "alice", f"http://127.0.0.1:{server.port}", DOC)
        await chromium.click("alice", ".cm-content")
        await chromium.press("alice", "Control+End")
        await chromium.type("alice", "pri")
        async with asyncio.timeout(5):
            while not backend.prompts:  # the first request is with the model
                await asyncio.sleep(0.02)
        await chromium.type("alice", "nt(")
        ghost = await chromium.wait("alice", GHOST, timeout=5)
        assert ghost == "_stale_or_fresh"
        assert backend.cancelled == 1 and backend.finished == 1  # the stale one was dropped
        assert len(backend.prompts) == 2
        assert backend.prompts[1].rendered.prefix.endswith(
            "print("
        )  # the fresh one asked at "print("
        shown_at = await chromium.eval(
            "alice",
            "() => window.collab.editor.view.state.doc.length",
        )
        head = await chromium.eval(
            "alice", "() => window.collab.editor.view.state.selection.main.head"
        )
        assert head == shown_at
