"""A user with a read-only token: a branch they may not write opens read-only and says so,
a write the server refuses anyway is shown, and their own branch is theirs to write."""

from __future__ import annotations

import asyncio

import pytest
from chromium import Chromium
from pages import YTEXT, wait_synced
from servers import DEMO_FILES

from collab import Client, CollabServer
from collab.server.auth import Role, TokenAuthenticator

pytestmark = pytest.mark.browser

DOC = "demo/main:README.md"
STATUS = "() => document.querySelector('#status').textContent"


async def test_a_reader_gets_read_only_editors_on_others_branches(
    secure_server: CollabServer, chromium: Chromium, tokens: TokenAuthenticator
) -> None:
    http = f"http://127.0.0.1:{secure_server.port}"
    token = tokens.mint(user="rita", repo="demo", role=Role.READ)
    await chromium.open("rita", f"{http}/?token={token}#{DOC}")
    await wait_synced(chromium, "rita", DOC)
    await chromium.wait("rita", f"() => ({STATUS})() === 'connected · read-only'")
    assert await chromium.eval("rita", "() => window.collab.editor.view.state.readOnly")
    assert "(read-only)" in await chromium.eval(
        "rita", "() => document.querySelector('#where').textContent"
    )
    await chromium.click("rita", ".cm-content")
    await chromium.press("rita", "Control+End")
    await chromium.type("rita", "typed;")
    await asyncio.sleep(0.3)
    assert await chromium.eval("rita", YTEXT) == DEMO_FILES["README.md"]
    await chromium.screenshot("rita", "read-only")

    # a write past the editor is refused by the server, and the page says so
    await chromium.eval("rita", "() => window.collab.editor.ytext.insert(0, 'forced;')")
    await chromium.wait("rita", f"() => ({STATUS})().includes('writes are refused')")
    writer = tokens.mint(user="walt", repo="demo", role=Role.WRITE)
    async with Client(secure_server.url, token=writer) as walt:
        doc = await walt.open(DOC)
        await asyncio.sleep(0.3)
        assert str(doc.text) == DEMO_FILES["README.md"]

    # the reader's own branch is writable
    own = await chromium.eval("rita", "() => window.collab.own")
    await chromium.eval("rita", "() => window.collab.open(window.collab.own, 'README.md')")
    await wait_synced(chromium, "rita", f"demo/{own}:README.md")
    assert await chromium.eval("rita", STATUS) == "connected"
    await chromium.click("rita", ".cm-content")
    await chromium.press("rita", "Control+End")
    await chromium.type("rita", "mine;")
    async with Client(secure_server.url, token=token) as reader:
        doc = await reader.open(f"demo/{own}:README.md")
        await doc.wait_for(lambda text: text == DEMO_FILES["README.md"] + "mine;")
