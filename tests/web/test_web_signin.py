"""Signing in to the web editor: a name in dev mode, a token (in the URL or pasted once)
with a secret."""

from __future__ import annotations

import pytest
from chromium import Chromium
from pages import wait_synced

from collab import CollabServer
from collab.server.auth import Role, TokenAuthenticator

pytestmark = pytest.mark.browser

DOC = "demo/main:README.md"


async def test_dev_mode_asks_for_a_name(server: CollabServer, chromium: Chromium) -> None:
    await chromium.open("guest", f"http://127.0.0.1:{server.port}/#{DOC}")
    await chromium.wait("guest", "() => !document.querySelector('#signin').hidden")
    assert await chromium.eval("guest", "() => document.querySelector('#signin-token').hidden")
    await chromium.screenshot("guest", "sign-in")
    await chromium.click("guest", "#signin input[name=user]")
    await chromium.type("guest", "Zoë")
    await chromium.press("guest", "Enter")
    await wait_synced(chromium, "guest", DOC)
    assert await chromium.eval("guest", "() => document.querySelector('#me').textContent") == "Zoë"
    await chromium.reload("guest")  # the tab keeps the name
    await wait_synced(chromium, "guest", DOC)


async def test_a_token_in_the_url_is_kept_and_taken_out_of_the_address(
    secure_server: CollabServer, chromium: Chromium, tokens: TokenAuthenticator
) -> None:
    http = f"http://127.0.0.1:{secure_server.port}"
    token = tokens.mint(user="tess", repo="demo", role=Role.WRITE)
    await chromium.open("tess", f"{http}/?token={token}#{DOC}")
    await wait_synced(chromium, "tess", DOC)
    assert "token" not in await chromium.eval("tess", "() => location.href")
    own = await chromium.eval("tess", "() => window.collab.own")
    assert own.startswith("people/tess")
    await chromium.reload("tess")  # pasted once: kept in the browser
    await wait_synced(chromium, "tess", DOC)

    # a wrong token is refused and the form asks for another
    await chromium.open("eve", f"{http}/?token=v1.bad.token#{DOC}")
    await chromium.wait("eve", "() => !document.querySelector('#signin').hidden")
    assert await chromium.eval("eve", "() => document.querySelector('#signin-name').hidden")
    assert "sign in again" in await chromium.eval(
        "eve", "() => document.querySelector('#signin-error').textContent"
    )
    await chromium.click("eve", "#signin input[name=token]")
    await chromium.insert("eve", token)
    await chromium.press("eve", "Enter")
    await wait_synced(chromium, "eve", DOC)
