"""Files whose names hold characters that mean something in a URL (``%``, ``#``, ``?``): the
page opens and edits those very files, and its address (``#<document id>``, encoded) opens
them again after a reload."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from chromium import Chromium
from pages import YTEXT, open_page, wait_synced
from servers import DEMO_FILES, make_config

from collab import Client, CollabServer
from gitsync import create_demo_repo

pytestmark = pytest.mark.browser

ODD = {
    "notes/a%20b.md": "percent twenty\n",
    "notes/a b.md": "a space\n",
    "notes/issue#12.md": "issue twelve\n",
    "notes/what?.md": "a question\n",
    "notes/50%.md": "fifty percent\n",
}


@pytest.fixture
async def odd_server(tmp_path: Path) -> AsyncIterator[CollabServer]:
    create_demo_repo(tmp_path / "repos" / "demo", {**DEMO_FILES, **ODD})
    async with CollabServer(make_config(tmp_path / "repos", tmp_path / "data")) as srv:
        yield srv


async def test_names_with_url_characters(odd_server: CollabServer, chromium: Chromium) -> None:
    http = f"http://127.0.0.1:{odd_server.port}"
    await open_page(chromium, "ann", http, "demo/main:README.md")
    typed = [path for path in ODD if path != "notes/a b.md"]
    for path in typed:
        doc = f"demo/main:{path}"
        await chromium.click("ann", f'#files .file[data-path="{path}"]')
        await wait_synced(chromium, "ann", doc, timeout=8)
        assert await chromium.eval("ann", YTEXT) == ODD[path], path
        await chromium.click("ann", ".cm-content")
        await chromium.press("ann", "Control+End")
        await chromium.type("ann", "typed;")
    async with Client(odd_server.url, user="bob") as bob:
        for path, text in ODD.items():
            doc = await bob.open(f"demo/main:{path}")
            want = text + ("typed;" if path in typed else "")
            await doc.wait_for(lambda now, want=want: now == want, timeout=10)

    # the address names the document encoded, and a reload opens it again
    assert await chromium.eval("ann", "() => location.hash") == "#demo/main:notes/50%25.md"
    await chromium.reload("ann")
    await wait_synced(chromium, "ann", "demo/main:notes/50%.md", timeout=8)
    # an address written by hand, not encoded: taken as it is
    await chromium.open("cy", f"{http}/?user=cy#demo/main:notes/50%.md")
    await wait_synced(chromium, "cy", "demo/main:notes/50%.md", timeout=8)
    assert await chromium.eval("cy", YTEXT) == "fifty percent\ntyped;"
    await chromium.screenshot("cy", "percent")
