"""The web editor in real Chromium: two people and a Python client typing into one file,
remote carets with the signed-in names, a reload and an offline spell."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from chromium import Chromium
from pages import STATUS, TEXT, YTEXT, carets, open_page, wait_git, wait_synced

from collab import Client, CollabServer

pytestmark = pytest.mark.browser

DOC = "demo/main:docs/unicode.txt"
SEED = "héllo wörld, 世界, 🎉 emoji\n"  # tests/servers.py DEMO_FILES


def http(server: CollabServer) -> str:
    return f"http://127.0.0.1:{server.port}"


async def wait_equal(
    chromium: Chromium, pages: list[str], expected: str, timeout: float = 15
) -> None:
    """Every page's editor and live document hold ``expected``."""
    for page in pages:
        await chromium.wait(
            page,
            f"(want) => ({YTEXT})() === want && ({TEXT})() === want",
            expected,
            timeout=timeout,
        )


async def test_two_browsers_and_a_python_client_type_accents_cjk_and_emoji(
    server: CollabServer, chromium: Chromium, repos: Path
) -> None:
    for page in ("alice", "bob"):
        await open_page(chromium, page, http(server), DOC)
    await chromium.click("alice", ".cm-content")
    await chromium.press("alice", "Control+Home")
    await chromium.click("bob", ".cm-content")
    await chromium.press("bob", "Control+End")
    # skin-tone modifiers and a ZWJ sequence are surrogate pairs in UTF-16
    alice = "Ça va, élève? 世界の人 naïve "
    bob = "👍🏽 👋🏿 👩🏾‍💻 日本語 ñ"
    python = " Pythön ø 中文 🎉"
    async with Client(server.url, user="py") as client:
        doc = await client.open(DOC)

        async def python_types() -> None:
            after = "héllo wörld,"
            for k, char in enumerate(python):
                doc.insert(str(doc).index(after) + len(after) + k, char)
                await asyncio.sleep(0.02)

        await asyncio.gather(
            chromium.type("alice", alice, delay_ms=15),
            chromium.type("bob", bob, delay_ms=15),
            python_types(),
        )
        expected = alice + "héllo wörld," + python + " 世界, 🎉 emoji\n" + bob
        await wait_equal(chromium, ["alice", "bob"], expected)
        await doc.wait_for(lambda text: text == expected, timeout=10)
        await chromium.screenshot("alice", "typed")
        await chromium.screenshot("bob", "typed")
        # byte for byte: the editors, the Python client and git
        shown = [await chromium.eval(page, YTEXT) for page in ("alice", "bob")]
        assert {text.encode("utf-8") for text in [*shown, str(doc)]} == {expected.encode()}
        await wait_git(repos / "demo", "main:docs/unicode.txt", expected.encode())


async def test_remote_carets_named_and_a_reload_and_offline_spell_lose_nothing(
    server: CollabServer, chromium: Chromium
) -> None:
    doc = "demo/main:README.md"
    for page in ("alice", "bob"):
        await open_page(chromium, page, http(server), doc)
        await chromium.click(page, ".cm-content")
        await chromium.press(page, "Control+End")
    await chromium.wait(
        "bob",
        "() => [...document.querySelectorAll('.cm-ySelectionInfo')].some(e => e.textContent === 'alice')",
    )
    await chromium.wait(
        "alice",
        "() => [...document.querySelectorAll('.cm-ySelectionInfo')].some(e => e.textContent === 'bob')",
    )
    assert await carets(chromium, "alice") == ["bob"]
    assert await carets(chromium, "bob") == ["alice"]
    await chromium.screenshot("bob", "carets")

    # alice types while bob reloads
    markers = [f"a{k}é;" for k in range(30)]
    typing = asyncio.create_task(chromium.type("alice", "".join(markers), delay_ms=20))
    await asyncio.sleep(0.3)
    await chromium.reload("bob")
    await wait_synced(chromium, "bob", doc)
    await chromium.click("bob", ".cm-content")
    await chromium.press("bob", "Control+Home")
    await chromium.type("bob", "b-reloaded🎉;")
    await typing
    text = await chromium.eval("alice", YTEXT)
    await wait_equal(chromium, ["alice", "bob"], text)
    for marker in [*markers, "b-reloaded🎉;"]:
        assert text.count(marker) == 1, marker
    await chromium.screenshot("bob", "after-reload")

    # bob goes offline while both type; back online, both sides have everything once
    await chromium.offline("bob", True)
    await chromium.wait("bob", "() => !navigator.onLine")
    # the socket stays open until the network is back; the status says offline at once
    await chromium.wait("bob", f"() => ({STATUS})() === 'offline'", timeout=0.5)
    await chromium.type("bob", "b-offline世界;", delay_ms=10)
    await chromium.press("alice", "Control+End")
    await chromium.type("alice", "a-while-bob-is-off👋🏽;", delay_ms=10)
    await chromium.screenshot("bob", "offline")
    await asyncio.sleep(1)
    assert "b-offline" not in await chromium.eval("alice", YTEXT)  # bob really is offline
    await chromium.offline("bob", False)
    await wait_synced(chromium, "bob", doc, timeout=20)
    await chromium.wait("bob", f"() => ({STATUS})() === 'connected'")
    text = await chromium.eval("alice", YTEXT)
    for marker in ("b-offline世界;", "a-while-bob-is-off👋🏽;"):
        await chromium.wait("alice", f"(m) => ({YTEXT})().includes(m)", marker, timeout=15)
    text = await chromium.eval("alice", YTEXT)
    await wait_equal(chromium, ["alice", "bob"], text)
    for marker in [*markers, "b-reloaded🎉;", "b-offline世界;", "a-while-bob-is-off👋🏽;"]:
        assert text.count(marker) == 1, marker
    await chromium.screenshot("bob", "back-online")


async def test_invisible_and_bidi_characters_are_shown_and_the_page_logs_no_error(
    server: CollabServer, chromium: Chromium
) -> None:
    """Control characters, a zero-width space and bidi overrides (which make code read
    otherwise than it runs) are drawn as placeholders, not as nothing; opening and editing
    logs no error in the page."""
    await open_page(chromium, "alice", http(server), DOC)
    await chromium.click("alice", ".cm-content")
    await chromium.press("alice", "Control+End")
    await chromium.insert("alice", "x\u202eRLO\u202c \u200bZW\u0007BEL")
    shown = "() => document.querySelectorAll('.cm-content .cm-specialChar').length"
    assert await chromium.wait("alice", f"() => ({shown})() === 4")  # RLO, PDF, ZWSP, BEL
    assert await chromium.errors("alice") == []
    assert await chromium.errors("alice") == []


async def test_undo_takes_back_ones_own_edits_only(
    server: CollabServer, chromium: Chromium
) -> None:
    doc = "demo/main:src/app.py"
    for page in ("alice", "bob"):
        await open_page(chromium, page, http(server), doc)
        await chromium.click(page, ".cm-content")
    await chromium.press("alice", "Control+End")
    await chromium.type("alice", "# alice: ça")
    await chromium.wait("bob", f"() => ({YTEXT})().includes('# alice: ça')")
    await chromium.press("bob", "Control+Home")
    await chromium.type("bob", "# bob 🎉\n")
    await chromium.wait("alice", f"() => ({YTEXT})().startsWith('# bob 🎉')")
    await chromium.press("alice", "Control+z")
    expected = "# bob 🎉\nprint('hello')\n"
    await wait_equal(chromium, ["alice", "bob"], expected)
    await chromium.press("alice", "Control+y")
    await wait_equal(chromium, ["alice", "bob"], expected + "# alice: ça")


async def test_a_file_with_crlf_line_ends_is_edited_where_the_cursor_is(
    server: CollabServer, chromium: Chromium, repos: Path
) -> None:
    """Editor offsets and the live text's agree in a CRLF file: text goes where it is typed,
    for the editor and for every other copy, and the file keeps its line ends (Enter breaks
    with CRLF, Backspace at a line's start takes the CR with the break)."""
    doc = "demo/main:crlf.txt"
    async with Client(server.url, user="py") as client:
        written = await client.open(doc)
        written.insert(0, "line one\r\nline two\r\nline three\r\n")
        await client.flush()
        for page in ("alice", "bob"):
            await open_page(chromium, page, http(server), doc)
        await chromium.click("alice", ".cm-content")
        await chromium.press("alice", "Control+Home")
        for key in ("ArrowDown", "ArrowDown", "Home"):
            await chromium.press("alice", key)
        await chromium.type("alice", "X")
        await chromium.press("alice", "End")
        await chromium.type("alice", "Y")
        await chromium.press("alice", "Enter")
        await chromium.type("alice", "Z")
        expected = "line one\r\nline two\r\nXline threeY\r\nZ\r\n"
        await wait_equal(chromium, ["alice", "bob"], expected)
        await written.wait_for(lambda text: text == expected, timeout=10)
        await chromium.press("alice", "Home")
        await chromium.press("alice", "Backspace")
        expected = "line one\r\nline two\r\nXline threeYZ\r\n"
        await wait_equal(chromium, ["alice", "bob"], expected)
        await chromium.click("bob", ".cm-content")
        await chromium.press("bob", "Control+End")
        await chromium.type("bob", "last")
        expected += "last"
        await wait_equal(chromium, ["alice", "bob"], expected)
        await written.wait_for(lambda text: text == expected, timeout=10)
    await wait_git(repos / "demo", "main:crlf.txt", expected.encode())


PASTE = """(text) => {
  const data = new DataTransfer()
  data.setData('text/plain', text)
  document.querySelector('.cm-content').dispatchEvent(
    new ClipboardEvent('paste', { clipboardData: data, bubbles: true, cancelable: true }))
}"""


async def test_line_breaks_typed_or_pasted_take_the_files_line_ends(
    server: CollabServer, chromium: Chromium
) -> None:
    """Enter in a CRLF Python file indents as in any Python file and breaks with CRLF; text
    pasted with CRLF into a file with LF line ends comes in with LF, and text pasted with LF
    into a CRLF file with CRLF."""
    async with Client(server.url, user="py") as client:
        crlf = await client.open("demo/main:crlf.py")
        crlf.insert(0, "def f():\r\n    pass\r\n")
        await client.flush()
        await open_page(chromium, "alice", http(server), "demo/main:crlf.py")
        await chromium.click("alice", ".cm-content")
        await chromium.press("alice", "Control+Home")
        await chromium.press("alice", "End")
        await chromium.press("alice", "Enter")
        await chromium.type("alice", "x = 1")
        await chromium.press("alice", "Control+End")
        await chromium.eval("alice", PASTE, "pasted a\npasted b\n")
        expected = "def f():\r\n  x = 1\r\n    pass\r\npasted a\r\npasted b\r\n"  # (indent unit: 2)
        await wait_equal(chromium, ["alice"], expected)
        await crlf.wait_for(lambda text: text == expected, timeout=10)
        await open_page(chromium, "alice", http(server), "demo/main:src/app.py")
        await chromium.click("alice", ".cm-content")
        await chromium.press("alice", "Control+End")
        await chromium.eval("alice", PASTE, "one\r\ntwo\rthree\r\n")
        await wait_equal(chromium, ["alice"], "print('hello')\none\ntwo\nthree\n")
