"""Moving around the web editor: the last file asked for wins, a link followed in the page
opens its document, the file tree and log follow the last branch asked for, the branch
panel and the file tree work from the keyboard (a key held
while the list is made again too), and a failed operation is shown in the page."""

from __future__ import annotations

import asyncio

import pytest
from chromium import Chromium
from pages import NOTICES, open_page, wait_synced

from collab import Client, CollabServer

pytestmark = pytest.mark.browser

DOC = "demo/main:README.md"
# the first `branch.list` answer is slow (arrives after a later open's)
SLOW_FIRST = """() => {
  const fetch = window.fetch
  let slowed = false
  window.fetch = async (url, init) => {
    if (!slowed && String(url).startsWith('/api/branch.list')) {
      slowed = true
      await new Promise(resolve => setTimeout(resolve, 800))
    }
    return fetch(url, init)
  }
}"""
OPEN = """() => ({ editor: window.collab.editor.docId, hash: decodeURIComponent(location.hash),
  where: document.querySelector('#where').textContent,
  marked: [...document.querySelectorAll('#files .file.current')].map(e => e.dataset.path) })"""


async def test_the_last_file_asked_for_wins(server: CollabServer, chromium: Chromium) -> None:
    http = f"http://127.0.0.1:{server.port}"
    await open_page(chromium, "alice", http, DOC)
    await chromium.eval("alice", SLOW_FIRST)
    await chromium.click("alice", '#files .file[data-path="src/app.py"]')
    await asyncio.sleep(0.2)
    await chromium.click("alice", '#files .file[data-path="docs/unicode.txt"]')
    await wait_synced(chromium, "alice", "demo/main:docs/unicode.txt")
    await asyncio.sleep(1)  # the slow answer has come
    assert await chromium.eval("alice", OPEN) == {
        "editor": "demo/main:docs/unicode.txt",
        "hash": "#demo/main:docs/unicode.txt",
        "where": "main : docs/unicode.txt",
        "marked": ["docs/unicode.txt"],
    }


async def test_a_link_followed_in_the_page_opens_its_document(
    server: CollabServer, chromium: Chromium
) -> None:
    http = f"http://127.0.0.1:{server.port}"
    await open_page(chromium, "alice", http, DOC)
    await chromium.eval("alice", "() => { location.hash = '#demo/main:src/app.py' }")
    await wait_synced(chromium, "alice", "demo/main:src/app.py")
    assert (await chromium.eval("alice", OPEN))["where"] == "main : src/app.py"


async def test_the_branch_panel_and_the_files_work_from_the_keyboard(
    server: CollabServer, chromium: Chromium
) -> None:
    http = f"http://127.0.0.1:{server.port}"
    await open_page(chromium, "alice", http, DOC)
    await open_page(chromium, "bob", http)  # on his own branch
    own = await chromium.eval("bob", "() => window.collab.own")
    person = f"#branches li[data-branch='{own}'] .person"
    await chromium.wait("alice", "(s) => document.querySelector(s)", person)
    # a file: focused (Tab reaches it), opened with Enter
    await chromium.eval(
        "alice", "() => document.querySelector('#files .file[data-path=\"src/app.py\"]').focus()"
    )
    assert await chromium.eval("alice", "() => document.activeElement.dataset.path") == "src/app.py"
    await chromium.press("alice", "Enter")
    await wait_synced(chromium, "alice", "demo/main:src/app.py")
    # a person on another branch: Space opens the file they are on, there
    await chromium.eval("alice", "(s) => document.querySelector(s).focus()", person)
    await chromium.press("alice", " ")
    await wait_synced(chromium, "alice", f"demo/{own}:README.md")
    # and back to a branch by its name
    await chromium.eval(
        "alice", "() => document.querySelector(\"#branches li[data-branch='main'] .name\").focus()"
    )
    await chromium.press("alice", "Enter")
    await wait_synced(chromium, "alice", "demo/main:README.md")
    await chromium.screenshot("alice", "keyboard")


async def test_a_space_held_on_the_branch_panel_outlasts_a_move_of_someone(
    server: CollabServer, chromium: Chromium
) -> None:
    """Space clicks a button when it is let go, and only the button it went down on: the
    list made again meanwhile (someone moved) keeps that button."""
    http = f"http://127.0.0.1:{server.port}"
    await open_page(chromium, "alice", http, DOC)
    await open_page(chromium, "bob", http)  # on his own branch
    own = await chromium.eval("bob", "() => window.collab.own")
    branch = f"#branches li[data-branch='{own}']"
    await chromium.wait("alice", "(s) => document.querySelector(s)", f"{branch} .person")
    await chromium.eval("alice", "(s) => document.querySelector(s).focus()", f"{branch} .name")
    await chromium.down("alice", " ")
    await chromium.click("bob", '#files .file[data-path="src/app.py"]')
    await chromium.wait(
        "alice",
        "(s) => [...document.querySelectorAll(s)].some(b => b.textContent.endsWith('src/app.py'))",
        f"{branch} .person",
    )
    await chromium.up("alice", " ")
    await wait_synced(chromium, "alice", f"demo/{own}:README.md")


async def test_a_failed_fork_or_open_is_shown(server: CollabServer, chromium: Chromium) -> None:
    http = f"http://127.0.0.1:{server.port}"
    await open_page(chromium, "alice", http, DOC)
    await chromium.wait("alice", "() => document.querySelector('#files .file') !== null")
    await chromium.offline("alice", True)
    await chromium.click("alice", "#fork")
    await chromium.wait("alice", f"() => ({NOTICES})().includes('Could not fork main')")
    await chromium.click("alice", '#files .file[data-path="src/app.py"]')
    await chromium.wait(
        "alice", f"() => ({NOTICES})().includes('Could not open src/app.py on main')"
    )
    await chromium.screenshot("alice", "failed")
    await chromium.offline("alice", False)
    await wait_synced(chromium, "alice", DOC)
    # asked again, it opens
    await chromium.click("alice", '#files .file[data-path="src/app.py"]')
    await wait_synced(chromium, "alice", "demo/main:src/app.py")
    assert "Could not" not in await chromium.eval("alice", NOTICES)


# the file lists cannot be fetched while window.failing is set
FAILING = """() => {
  const fetch = window.fetch
  window.failing = true
  window.fetch = async (url, init) => {
    if (window.failing && String(url).startsWith('/api/branch.files')) {
      throw new TypeError('Failed to fetch')
    }
    return fetch(url, init)
  }
}"""


async def test_a_link_that_fails_to_open_leaves_the_address_at_what_is_open(
    server: CollabServer, chromium: Chromium
) -> None:
    """The address names the document open, not one that could not be opened: a reload or
    a copied link opens what the page shows, and the same link followed again opens."""
    http = f"http://127.0.0.1:{server.port}"
    await open_page(chromium, "alice", http, DOC)
    await chromium.wait("alice", "() => document.querySelector('#files .file') !== null")
    await chromium.eval("alice", FAILING)
    await chromium.eval("alice", "() => { location.hash = '#demo/main:src/app.py' }")
    await chromium.wait("alice", f"() => ({NOTICES})().includes('Could not open src/app.py')")
    shown = await chromium.eval("alice", OPEN)
    assert (shown["editor"], shown["hash"], shown["where"]) == (DOC, f"#{DOC}", "main : README.md")
    await chromium.eval("alice", "() => { window.failing = false }")
    await chromium.eval("alice", "() => { location.hash = '#demo/main:src/app.py' }")
    await wait_synced(chromium, "alice", "demo/main:src/app.py")


# the tree and log of `feat` come slowly (after a switch back to main)
SLOW_FEAT = """() => {
  const fetch = window.fetch
  window.fetch = async (url, init) => {
    const path = String(url)
    if ((path.startsWith('/api/branch.files') || path.startsWith('/api/branch.log'))
        && String(init?.body).includes('"feat"')) {
      await new Promise(resolve => setTimeout(resolve, 1200))
    }
    return fetch(url, init)
  }
}"""
PANEL = """() => ({ files: [...document.querySelectorAll('#files .file')].map(e => e.dataset.path),
  log: document.querySelector('#log-branch').textContent,
  subjects: [...document.querySelectorAll('#log .subject')].map(e => e.textContent) })"""


async def test_the_file_tree_and_log_follow_the_last_branch_asked_for(
    server: CollabServer, chromium: Chromium
) -> None:
    async with Client(server.url, user="bob") as bob:
        await bob.fork("demo", "main", "feat")
        doc = await bob.open("demo/feat:only-on-feat.txt")
        doc.insert(0, "feat\n")
        await bob.flush()
        await bob.commit("demo", "feat")
    http = f"http://127.0.0.1:{server.port}"
    await open_page(chromium, "alice", http, DOC)
    await chromium.wait("alice", "() => document.querySelector('#log .subject') !== null")
    await chromium.wait("alice", "() => document.querySelector('#branches li[data-branch=feat]')")
    before = await chromium.eval("alice", PANEL)
    await chromium.eval("alice", SLOW_FEAT)
    await chromium.click("alice", "#branches li[data-branch='feat'] button")
    await wait_synced(chromium, "alice", "demo/feat:README.md")  # its tree is on its way
    await chromium.click("alice", "#branches li[data-branch='main'] button")
    await wait_synced(chromium, "alice", DOC)
    await asyncio.sleep(1.5)  # feat's answers have come
    assert await chromium.eval("alice", PANEL) == before
    assert "only-on-feat.txt" not in before["files"] and before["log"] == "main"
