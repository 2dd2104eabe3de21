"""``kill -9`` of the server under open browsers: they reconnect by themselves, nothing is
lost or doubled, and every remote caret is back at once (not after the 15 s renewal). And
the server's store lost under open browsers: told 4017, they open the document again and
keep what was typed offline, once."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from chromium import Chromium
from pages import NOTICES, STATUS, TEXT, YTEXT, carets, open_page, wait_git, wait_synced
from serverproc import ServerProcess
from storedamage import flip_record, stored_rows

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


UNSAVED = "() => window.collab.unsavedEdits()"
READ_ONLY = "() => window.collab.editor.view.state.readOnly"
# y-websocket's next try comes well after the server is back
SLOW_RECONNECT = """() => { const provider = window.collab.editor.provider
  provider.maxBackoffTime = 4000; provider.wsUnsuccessfulReconnects = 30 }"""
# a `beforeunload` the page cancels: the browser would ask whether to leave (the real
# question, chromium.leave, closes the page when the answer is no)
ASKS_TO_LEAVE = """() => { const event = new Event('beforeunload', { cancelable: true })
  window.dispatchEvent(event); return event.defaultPrevented }"""


async def test_a_document_left_before_it_reconnected_keeps_its_edits(
    repos: Path, tmp_path: Path, chromium: Chromium
) -> None:
    server = ServerProcess(repos, tmp_path / "data")
    await server.start()
    http = f"http://127.0.0.1:{server.port}"
    doc = "demo/main:README.md"
    try:
        await open_page(chromium, "alice", http, doc)
        await chromium.click("alice", ".cm-content")
        await chromium.press("alice", "Control+End")
        await chromium.type("alice", "before;")
        await chromium.wait("alice", f"() => !({UNSAVED})()")  # the server has confirmed it
        assert not await chromium.eval("alice", ASKS_TO_LEAVE)

        await server.kill()
        await chromium.wait("alice", "() => !window.collab.editor.provider.wsconnected")
        await chromium.eval("alice", SLOW_RECONNECT)
        await chromium.type("alice", "while down;")
        assert await chromium.eval("alice", UNSAVED)
        assert await chromium.leave("alice")
        await server.start()
        # another file, opened before the left one has reconnected
        await chromium.click("alice", '#files .file[data-path="src/app.py"]')
        await wait_synced(chromium, "alice", "demo/main:src/app.py")
        assert await chromium.leave("alice")  # README's edits are not saved yet
        seed = "# Demo\n\nHello from the demo repository.\n"
        async with Client(server.url, user="carol") as carol:
            readme = await carol.open(doc)
            await readme.wait_for(lambda text: text == f"{seed}before;while down;", timeout=15)
        await chromium.wait("alice", f"() => !({UNSAVED})()")
        assert not await chromium.eval("alice", ASKS_TO_LEAVE)
        await chromium.click("alice", '#files .file[data-path="README.md"]')
        await chromium.wait("alice", f"(want) => ({YTEXT})() === want", f"{seed}before;while down;")

        # edits that cannot be saved in time: the page says so, with their text
        await chromium.eval("alice", "() => { window.collab.settings.keepFor = 1000 }")
        await server.kill()
        await chromium.wait("alice", "() => !window.collab.editor.provider.wsconnected")
        await chromium.eval("alice", SLOW_RECONNECT)
        await chromium.click("alice", ".cm-content")
        await chromium.press("alice", "Control+End")
        await chromium.type("alice", "lost;")
        await server.start()
        await chromium.click("alice", '#files .file[data-path="src/app.py"]')
        await chromium.wait(
            "alice",
            f"() => ({NOTICES})().includes('Your last edits to demo/main:README.md could not be saved')",
            timeout=5,
        )
        await chromium.screenshot("alice", "not-saved")
        assert not await chromium.leave("alice")  # what cannot be saved holds no one up
    finally:
        await server.stop()


async def test_a_damaged_document_keeps_what_was_typed_until_it_is_repaired(
    repos: Path, tmp_path: Path, chromium: Chromium
) -> None:
    """A document whose stored history the restarted server finds damaged (4018): the page
    keeps its copy, with what was typed offline, read-only, and tries again; once an operator
    has repaired the store, the page takes the document again (a new history: 4017) and its
    offline edits reach the branch, once."""
    data = tmp_path / "data"
    server = ServerProcess(repos, data)
    await server.start()
    http = f"http://127.0.0.1:{server.port}"
    seed = "héllo wörld, 世界, 🎉 emoji\n"
    try:
        await open_page(chromium, "alice", http, DOC)
        await chromium.click("alice", ".cm-content")
        await chromium.press("alice", "Control+End")
        await chromium.type("alice", "committed;")
        await wait_git(repos / "demo", "main:docs/unicode.txt", f"{seed}committed;".encode())
        await chromium.wait("alice", f"() => !({UNSAVED})()")

        await server.stop()  # a clean stop: the history is kept as one snapshot
        await chromium.wait("alice", "() => !window.collab.editor.provider.wsconnected")
        await chromium.eval("alice", "() => { window.collab.settings.damagedRetry = 500 }")
        await chromium.type("alice", "offline;")
        snapshots = [seq for seq, kind in stored_rows(data, DOC) if kind == "s"]
        assert snapshots
        flip_record(data, DOC, snapshots[-1])

        await server.start()
        await chromium.wait("alice", f"() => ({STATUS})() === 'damaged'", timeout=20)
        assert await chromium.eval("alice", READ_ONLY)
        assert await chromium.eval("alice", UNSAVED)  # kept, and the page still asks to leave
        assert await chromium.leave("alice")
        assert "damaged" in await chromium.eval("alice", NOTICES)
        await asyncio.sleep(1.5)  # tried again (every 0.5 s here), refused again, still kept
        assert await chromium.eval("alice", f"() => ({STATUS})() === 'damaged'")
        assert await chromium.eval("alice", TEXT) == f"{seed}committed;offline;"

        await server.stop()
        repaired = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "collab", "store", "repair", "--data-dir", str(data)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert repaired.returncode == 0, repaired
        await server.start()

        expected = f"{seed}committed;offline;"
        await wait_synced(chromium, "alice", DOC, timeout=20)
        await chromium.wait(
            "alice", f"(want) => ({YTEXT})() === want && ({TEXT})() === want", expected
        )
        await chromium.wait("alice", f"() => !({UNSAVED})()")
        assert not await chromium.eval("alice", READ_ONLY)
        # the editor, which had the focus when it was refused, has it back
        await chromium.wait("alice", "() => window.collab.editor.view.hasFocus")
        await chromium.press("alice", "Control+End")
        await chromium.type("alice", "after;")
        await wait_git(repos / "demo", "main:docs/unicode.txt", f"{expected}after;".encode())
        await chromium.wait("alice", f"() => !({UNSAVED})()")
        assert not await chromium.leave("alice")
    finally:
        await server.stop()
