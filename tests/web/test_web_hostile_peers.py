"""What another peer sends cannot restyle the page, nor make it fetch from elsewhere: a
cursor colour that is more than a colour is not relayed, and the page's Content-Security-
Policy keeps it from loading anything but the server's own files. Nor can it stop the page
showing the others' carets with a caret the editor cannot read."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from chromium import Chromium
from pages import carets, open_page

from collab import CollabServer

pytestmark = pytest.mark.browser

DOC = "demo/main:README.md"
_CARET_STYLES = (
    "() => [...document.querySelectorAll('.cm-ySelectionCaret, .cm-ySelectionInfo')]"
    ".map(e => e.getAttribute('style') || '')"
)


@pytest.fixture
async def beacon() -> AsyncIterator[tuple[str, list[str]]]:
    """A server elsewhere (another origin) that counts what it is asked for."""
    asked: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        asked.append(request.path)
        return web.Response(body=b"GIF89a", content_type="image/gif")

    app = web.Application()
    app.router.add_get("/{name}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.2", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.2:{port}", asked
    finally:
        await runner.cleanup()


async def test_a_peer_cannot_restyle_the_page_nor_make_it_fetch(
    server: CollabServer, chromium: Chromium, beacon: tuple[str, list[str]]
) -> None:
    elsewhere, asked = beacon
    http = f"http://127.0.0.1:{server.port}"
    await open_page(chromium, "ann", http, DOC)
    await open_page(chromium, "mallory", http, DOC)
    css = f"red; position: fixed; inset: 0; background: url({elsewhere}/caret.png)"
    await chromium.eval(
        "mallory",
        """(css) => {
          const awareness = window.collab.editor.provider.awareness
          awareness.setLocalStateField('user', { name: 'root', color: css, colorLight: css })
        }""",
        css,
    )
    await chromium.click("mallory", ".cm-content")
    await chromium.type("mallory", "m")
    await chromium.wait("ann", "() => document.querySelector('.cm-ySelectionInfo') !== null")
    assert await carets(chromium, "ann") == ["mallory"]
    styles = await chromium.eval("ann", _CARET_STYLES)
    assert styles and not any("position" in style or "url(" in style for style in styles)

    # whatever a peer slips into the page: nothing is fetched from another origin
    await chromium.eval(
        "ann",
        """(src) => {
          const img = document.createElement('img')
          img.src = src
          document.body.append(img)
          const div = document.createElement('div')
          div.setAttribute('style', `background: url(${src}2)`)
          document.body.append(div)
        }""",
        f"{elsewhere}/injected.png",
    )
    await chromium.eval("ann", "() => new Promise(done => setTimeout(done, 1000))")
    assert asked == []


@pytest.mark.parametrize(
    "caret",
    [
        {"anchor": "x", "head": "y"},
        {"anchor": {"item": {"client": "zz", "clock": "x"}}, "head": {"tname": "text"}},
    ],
    ids=["strings", "bad-item"],
)
async def test_a_peer_with_a_caret_no_editor_can_read_leaves_the_others_carets_shown(
    server: CollabServer, chromium: Chromium, caret: dict[str, object]
) -> None:
    http = f"http://127.0.0.1:{server.port}"
    for page in ("ann", "bob", "mallory"):
        await open_page(chromium, page, http, DOC)
    await chromium.click("bob", ".cm-content")
    await chromium.type("bob", "b")
    await chromium.wait("ann", "() => document.querySelector('.cm-ySelectionInfo') !== null")
    await chromium.eval(
        "mallory",
        "(caret) => window.collab.editor.provider.awareness.setLocalStateField('cursor', caret)",
        caret,
    )
    await chromium.eval("mallory", "() => new Promise(done => setTimeout(done, 300))")
    await chromium.click("bob", ".cm-content")
    await chromium.press("bob", "End")
    await chromium.type("bob", "c")  # bob's caret moves: ann's page draws it again
    await chromium.wait("ann", "() => window.collab.editor.ytext.toString().includes('c')")
    await chromium.eval("ann", "() => new Promise(done => setTimeout(done, 300))")
    assert await carets(chromium, "ann") == ["bob"]
    # and ann's own caret still goes out: bob sees it
    await chromium.click("ann", ".cm-content")
    await chromium.type("ann", "a")
    await chromium.wait(
        "bob",
        "() => [...document.querySelectorAll('.cm-ySelectionInfo')].some(e => e.textContent === 'ann')",
    )
