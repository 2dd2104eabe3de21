"""``kill -9`` of the server under open browsers: they reconnect by themselves, nothing is
lost or doubled, and every remote caret is back at once (not after the 15 s renewal). And
the server's store lost under open browsers: told 4017, they open the document again and
keep what was typed offline, once."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import pytest
from chromium import Chromium
from pages import TEXT, YTEXT, carets, open_page, wait_git, wait_synced
from serverproc import ServerProcess

from collab import Client

pytestmark = pytest.mark.browser

DOC = "demo/main:docs/unicode.txt"
PAGES = {"alice": "bob", "bob": "alice"}  # each page, and whose caret it shows


async def test_kill_9_under_open_browsers(repos: Path, tmp_path: Path, chromium: Chromium) -> None:
    server = ServerProcess(repos, tmp_path / "data")
    await server.start()
    http = f"http://127.0.0.1:{server.port}"
    try:
        for page in PAGES:
            await open_page(chromium, page, http, DOC)
            await chromium.click(page, ".cm-content")
            await chromium.press(page, "Control+End" if page == "alice" else "Control+Home")
        for page, other in PAGES.items():
            await chromium.wait(
                page,
                "(n) => [...document.querySelectorAll('.cm-ySelectionInfo')].some(e => e.textContent === n)",
                other,
            )
        await chromium.type("alice", "before the kill: é 世界 👍🏽;")
        await chromium.type("bob", "bob before;")
        for page in PAGES:
            await chromium.wait(
                page, f"() => ({YTEXT})().includes('👍🏽;') && ({YTEXT})().includes('bob before;')"
            )

        await server.kill()
        for page, other in PAGES.items():  # y-websocket drops remote states when its socket closes
            await chromium.wait(
                page,
                "(n) => ![...document.querySelectorAll('.cm-ySelectionInfo')].some(e => e.textContent === n)",
                other,
                timeout=15,
            )
        await chromium.type("alice", "while down: ñ 日本;")  # stays in the page until it is back
        await chromium.screenshot("alice", "server-down")

        await server.start()
        restarted = time.monotonic()
        for page in PAGES:
            await wait_synced(chromium, page, DOC, timeout=20)
        reconnected = time.monotonic() - restarted
        back = await asyncio.gather(
            *(
                chromium.wait(
                    page,
                    "(n) => [...document.querySelectorAll('.cm-ySelectionInfo')].some(e => e.textContent === n)",
                    other,
                    timeout=5,
                )
                for page, other in PAGES.items()
            )
        )
        cursors = time.monotonic() - restarted
        print(
            f"reconnected {reconnected:.2f} s, every caret back {cursors:.2f} s after the restart"
        )
        assert all(back)
        assert [await carets(chromium, page) for page in PAGES] == [["bob"], ["alice"]]

        expected = (
            "bob before;"
            + "héllo wörld, 世界, 🎉 emoji\n"
            + "before the kill: é 世界 👍🏽;while down: ñ 日本;"
        )
        for page in PAGES:
            await chromium.wait(page, f"(want) => ({YTEXT})() === want", expected, timeout=10)
            await chromium.screenshot(page, "reconnected")
    finally:
        await server.stop()


async def test_store_lost_under_open_browsers(
    repos: Path, tmp_path: Path, chromium: Chromium
) -> None:
    server = ServerProcess(repos, tmp_path / "data")
    await server.start()
    http = f"http://127.0.0.1:{server.port}"
    try:
        for page in PAGES:
            await open_page(chromium, page, http, DOC)
            await chromium.click(page, ".cm-content")
            await chromium.press(page, "Control+End" if page == "alice" else "Control+Home")
        await chromium.type("alice", "committed;")
        seed = "héllo wörld, 世界, 🎉 emoji\n"
        await wait_git(repos / "demo", "main:docs/unicode.txt", f"{seed}committed;".encode())
        await chromium.wait("bob", f"() => ({YTEXT})().endsWith('committed;')")

        # the store is lost: the restarted server seeds the document again from the branch
        # head, a new history that the pages' copies do not belong to (4017)
        await server.kill()
        for page in PAGES:
            await chromium.wait(page, "() => !window.collab.editor.provider.wsconnected")
        await chromium.type("alice", "alice offline;")
        await chromium.type("bob", "bob offline;")
        shutil.rmtree(tmp_path / "data")
        await server.start()

        # each page re-applies its own offline edits only: nothing is lost, nothing doubled
        expected = f"bob offline;{seed}committed;alice offline;"
        for page in PAGES:
            await wait_synced(chromium, page, DOC, timeout=20)
            await chromium.wait(
                page, f"(want) => ({YTEXT})() === want && ({TEXT})() === want", expected
            )
        for page, other in PAGES.items():  # the carets, bound to the fresh copies, are back
            await chromium.wait(
                page,
                "(n) => [...document.querySelectorAll('.cm-ySelectionInfo')].some(e => e.textContent === n)",
                other,
            )
        await chromium.screenshot("alice", "reloaded")
        async with Client(server.url, user="carol") as carol:
            doc = await carol.open(DOC)
            await doc.wait_for(lambda text: text == expected, timeout=10)
            # typing goes on in the same view, into the fresh copy
            await chromium.type("alice", "after;")
            await doc.wait_for(lambda text: text == f"{expected}after;", timeout=10)
        status = await chromium.eval("alice", "() => document.querySelector('#status').textContent")
        assert status == "connected"
    finally:
        await server.stop()
