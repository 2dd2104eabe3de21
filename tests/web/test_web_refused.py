"""Documents the server refuses for good: the page stops asking, turns the editor read-only
and says why (the document full, not a text file, too large, signed out: then sign in
again, and what was typed meanwhile is kept); a file a branch does not have is said to be
missing, and typing creates it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from chromium import Chromium
from pages import NOTICES, STATUS, YTEXT, open_page, wait_synced
from servers import DEMO_FILES, make_config

from collab import Client, CollabServer
from collab.server.auth import Role, TokenAuthenticator
from gitsync import create_demo_repo

pytestmark = pytest.mark.browser

FILES = {"img/logo.bin": "PNG\x00\x01\x02binary\x00", "big.txt": "x" * 9000 + "\n"}
READ_ONLY = "() => window.collab.editor.view.state.readOnly"
# counts the closes of the open editor's socket (each try to connect that was refused)
TOKEN_TTL = 5  # seconds: a token that expires while its page is open

COUNT_CLOSES = """() => { window.closes = 0
  window.collab.editor.provider.on('connection-close', () => window.closes++) }"""


@pytest.fixture
async def capped(tmp_path: Path) -> AsyncIterator[CollabServer]:
    repos = tmp_path / "repos"
    create_demo_repo(repos / "demo", {**DEMO_FILES, **FILES})
    config = make_config(repos, tmp_path / "data", max_document=64 * 1024, max_file=4096)
    async with CollabServer(config) as srv:
        yield srv


async def _refused(chromium: Chromium, page: str, status: str, words: str) -> None:
    """The page says ``status`` and ``words``, read-only, and asks no more."""
    await chromium.wait(page, f"(want) => ({STATUS})() === want", status)
    assert await chromium.eval(page, READ_ONLY)
    assert words in await chromium.eval(page, NOTICES)
    closes = await chromium.eval(page, "() => window.closes")
    await asyncio.sleep(1)  # y-websocket alone would have tried again some 9 times
    assert await chromium.eval(page, "() => window.closes") == closes


async def test_refused_documents_are_read_only_and_say_why(
    capped: CollabServer, chromium: Chromium
) -> None:
    http = f"http://127.0.0.1:{capped.port}"
    doc = "demo/main:README.md"
    await open_page(chromium, "alice", http, doc)
    await chromium.eval("alice", COUNT_CLOSES)
    # a paste past the document's cap (64 KiB here)
    await chromium.eval(
        "alice",
        "(text) => window.collab.editor.view.dispatch({ changes: { from: 0, insert: text } })",
        "0123456789abcdef" * 5000,
    )
    await _refused(chromium, "alice", "document full", "the last change was not kept")
    await chromium.screenshot("alice", "document-full")
    async with Client(capped.url, user="py") as py:
        assert str((await py.open(doc)).text) == DEMO_FILES["README.md"]
    # the notice offers to open it again, without the change
    await chromium.click("alice", "#notices button:text('Open it again')")
    await chromium.wait(
        "alice",
        f"(want) => ({YTEXT})() === want && ({STATUS})() === 'connected'",
        DEMO_FILES["README.md"],
    )
    assert not await chromium.eval("alice", READ_ONLY)

    for path, status, words in [
        ("img/logo.bin", "not a text file", "Not a text file"),
        ("big.txt", "too large", "over the server's size limit"),
    ]:
        await chromium.eval("alice", f"() => window.collab.open('main', {path!r})")
        await chromium.wait("alice", "(d) => window.collab.editor.docId === d", f"demo/main:{path}")
        await chromium.eval("alice", COUNT_CLOSES)
        await _refused(chromium, "alice", status, words)
        await chromium.screenshot("alice", status.replace(" ", "-"))


async def test_a_file_the_branch_lacks_is_said_to_be_missing(
    server: CollabServer, chromium: Chromium
) -> None:
    http = f"http://127.0.0.1:{server.port}"
    await open_page(chromium, "alice", http, "demo/main:README.md")
    await chromium.eval("alice", "() => window.collab.open('main', 'notes/todo.md')")
    await wait_synced(chromium, "alice", "demo/main:notes/todo.md")
    assert "(not on this branch)" in await chromium.eval(
        "alice", "() => document.querySelector('#where').textContent"
    )
    assert "notes/todo.md is not on main: what you type creates it" in await chromium.eval(
        "alice", NOTICES
    )
    assert not await chromium.eval("alice", READ_ONLY)
    await chromium.screenshot("alice", "missing")
    # typed into being: once committed, it is on the branch, and the page says so
    await chromium.click("alice", ".cm-content")
    await chromium.type("alice", "- [ ] write it\n")
    await chromium.wait(
        "alice",
        "() => !document.querySelector('#where').textContent.includes('not on this branch')",
        timeout=15,
    )
    assert await chromium.eval("alice", NOTICES) == ""
    # a file that is there says nothing of the kind
    await chromium.eval("alice", "() => window.collab.open('main', 'README.md')")
    await wait_synced(chromium, "alice", "demo/main:README.md")
    assert await chromium.eval("alice", NOTICES) == ""


async def test_signed_out_then_signed_in_again_keeps_what_was_typed(
    secure_server: CollabServer, chromium: Chromium, tokens: TokenAuthenticator
) -> None:
    http = f"http://127.0.0.1:{secure_server.port}"
    doc = "demo/main:README.md"
    # long enough for a busy machine to open the page while it is valid
    expires = time.monotonic() + TOKEN_TTL
    token = tokens.mint(user="tom", repo="demo", role=Role.WRITE, ttl=TOKEN_TTL)
    await chromium.open("tom", f"{http}/?token={token}#{doc}")
    await wait_synced(chromium, "tom", doc)
    await chromium.eval("tom", COUNT_CLOSES)
    await asyncio.sleep(expires + 0.5 - time.monotonic())
    # the server ends the connection as the token expires (4001), and the page says so
    await _refused(chromium, "tom", "signed out", "sign in again")
    # something is typed before the person signs in again
    await chromium.eval("tom", "() => { window.collab.editor.ytext.insert(0, 'meanwhile;') }")
    assert await chromium.eval("tom", "() => window.collab.unsavedEdits()")
    await chromium.screenshot("tom", "signed-out")

    await chromium.click("tom", "#notices button:text('Sign in again')")
    await chromium.wait("tom", "() => !document.querySelector('#signin').hidden")
    await chromium.click("tom", "#signin input[name=token]")
    await chromium.insert("tom", tokens.mint(user="tom", repo="demo", role=Role.WRITE))
    await chromium.press("tom", "Enter")
    await chromium.wait("tom", f"() => ({STATUS})() === 'connected'")
    await wait_synced(chromium, "tom", doc)
    assert not await chromium.eval("tom", READ_ONLY)
    assert await chromium.eval("tom", NOTICES) == ""
    writer = tokens.mint(user="walt", repo="demo", role=Role.WRITE)
    async with Client(secure_server.url, token=writer) as walt:
        opened = await walt.open(doc)
        await opened.wait_for(lambda text: text == "meanwhile;" + DEMO_FILES["README.md"])
    await chromium.wait("tom", "() => !window.collab.unsavedEdits()")
