"""Branches in the web editor: fork, edit, preview a merge, apply it; a conflicting merge
resolved together, its markers in everyone's editor."""

from __future__ import annotations

from pathlib import Path

import pytest
from chromium import Chromium
from pages import YTEXT, git_show, open_page, wait_git, wait_synced

from collab import Client, CollabServer

pytestmark = pytest.mark.browser

CURRENT = "() => window.collab.current.branch"
OWN = "() => window.collab.own"


async def test_fork_edit_merge_and_a_conflict_resolved_together(
    server: CollabServer, chromium: Chromium, repos: Path
) -> None:
    http = f"http://127.0.0.1:{server.port}"
    repo = repos / "demo"
    readme = (await git_show(repo, "main:README.md")) or b""
    await open_page(chromium, "alice", http)  # lands on her own branch
    own = await chromium.eval("alice", OWN)
    assert own.startswith("people/alice") and await chromium.eval("alice", CURRENT) == own
    await chromium.wait(
        "alice", "(own) => document.querySelector('#branches .mine')?.textContent === own", own
    )

    # fork: the page moves to the new branch, which the branch list shows
    await chromium.click("alice", "#fork")
    await chromium.wait("alice", "(own) => window.collab.current.branch !== own", own)
    fork = await chromium.eval("alice", CURRENT)
    await wait_synced(chromium, "alice", f"demo/{fork}:README.md")
    await chromium.wait(
        "alice", "(b) => document.querySelector(`#branches li[data-branch='${b}']`)", fork
    )
    await chromium.click("alice", ".cm-content")
    await chromium.press("alice", "Control+Home")
    await chromium.type("alice", "Forked by alice: ça marche 🎉\n")
    await chromium.screenshot("alice", "forked-and-edited")

    # the preview shows the change and changes nothing
    await chromium.select("alice", "#merge-source", fork)
    await chromium.select("alice", "#merge-target", "main")
    await chromium.click("alice", "#merge-preview")
    await chromium.wait("alice", "() => document.querySelector('#merge-result pre .add')")
    diff = await chromium.eval("alice", "() => document.querySelector('#merge-result').innerText")
    assert "README.md" in diff and "+Forked by alice: ça marche 🎉" in diff
    await chromium.screenshot("alice", "merge-preview")
    assert await git_show(repo, "main:README.md") == readme  # nothing changed yet

    await chromium.click("alice", "#merge-result .merge-apply")
    await chromium.wait(
        "alice", "() => /merged/.test(document.querySelector('#merge-result').innerText)"
    )
    merged = "Forked by alice: ça marche 🎉\n".encode() + readme
    assert await git_show(repo, "main:README.md") == merged
    await chromium.screenshot("alice", "merged")

    # a conflict: bob edits main's first line, alice the fork's
    await open_page(chromium, "bob", http, "demo/main:README.md")
    # alice's branch panel shows bob on main, live (the repository's events)
    await chromium.wait(
        "alice",
        """() => [...document.querySelectorAll("#branches li[data-branch='main'] .person")]
            .some(p => p.textContent === 'bob · README.md')""",
        timeout=5,
    )
    await chromium.click("bob", ".cm-content")
    await chromium.press("bob", "Control+Home")
    await chromium.type("bob", "Bob says: ")
    await chromium.click("alice", ".cm-content")
    await chromium.press("alice", "Control+Home")
    await chromium.type("alice", "Alice says: ")
    await chromium.click("alice", "#merge-preview")
    await chromium.wait("alice", "() => document.querySelector('#merge-result .conflicts')")
    assert "README.md" in await chromium.eval(
        "alice", "() => document.querySelector('#merge-result .conflicts').textContent"
    )
    await chromium.screenshot("alice", "conflict-preview")
    label = await chromium.eval(
        "alice", "() => document.querySelector('#merge-result .merge-apply').textContent"
    )
    assert label == "Resolve together"
    await chromium.click("alice", "#merge-result .merge-apply")

    # the markers are in the target's live document, for bob and (now on main) alice
    for page in ("bob", "alice"):
        await chromium.wait(
            page,
            "() => window.collab.editor.docId === 'demo/main:README.md' && window.collab.editor.provider.synced",
        )
        await chromium.wait(
            page,
            f"() => ({YTEXT})().includes('<<<<<<< main') && ({YTEXT})().includes('>>>>>>> {fork}')",
        )
        await chromium.screenshot(page, "resolving-together")
    text = await chromium.eval("bob", YTEXT)
    assert "Bob says: Forked by alice" in text and "Alice says: Forked by alice" in text

    # bob settles it; git gets the resolution
    resolved = "Alice and Bob say: Forked by alice: ça marche 🎉\n" + readme.decode()
    await chromium.eval(
        "bob",
        "(text) => { const view = window.collab.editor.view; view.dispatch({ changes: { from: 0, to: view.state.doc.length, insert: text } }) }",
        resolved,
    )
    await chromium.wait("alice", f"(want) => ({YTEXT})() === want", resolved)
    await wait_git(repo, "main:README.md", resolved.encode())
    await chromium.wait(
        "alice", "() => /Alice|alice/.test(document.querySelector('#log').innerText)"
    )
    await chromium.screenshot("alice", "resolved")

    # bob hops into alice's fork from the branch panel: he edits it live with her
    await chromium.click("bob", f"#branches li[data-branch='{fork}'] .name")
    await wait_synced(chromium, "bob", f"demo/{fork}:README.md")
    await chromium.click("alice", f"#branches li[data-branch='{fork}'] .name")
    await wait_synced(chromium, "alice", f"demo/{fork}:README.md")
    await chromium.click("bob", ".cm-content")
    await chromium.press("bob", "Control+End")
    await chromium.type("bob", "bob was here")
    await chromium.wait("alice", f"() => ({YTEXT})().endsWith('bob was here')")
    await chromium.screenshot("bob", "hopped-into-the-fork")


MERGED = "() => /merged/.test(document.querySelector('#merge-result').innerText)"


async def preview_an_edit_of(own: str, py: Client, chromium: Chromium) -> None:
    """``# previewed`` added to ``src/app.py`` on alice's branch ``own`` (by ``py``), and the
    merge of it into ``main`` previewed in her page, its apply button shown."""
    app = await py.open(f"demo/{own}:src/app.py")
    app.insert(len(str(app.text)), "# previewed\n")
    await py.flush()
    await chromium.select("alice", "#merge-source", own)
    await chromium.select("alice", "#merge-target", "main")
    await chromium.click("alice", "#merge-preview")
    await chromium.wait("alice", "() => document.querySelector('#merge-result .merge-apply')")


async def test_apply_merges_what_was_previewed(
    server: CollabServer, chromium: Chromium, repos: Path
) -> None:
    http = f"http://127.0.0.1:{server.port}"
    repo = repos / "demo"
    readme = (await git_show(repo, "main:README.md")) or b""
    await open_page(chromium, "alice", http)
    own = await chromium.eval("alice", OWN)
    async with Client(server.url, user="alice") as py:
        await preview_an_edit_of(own, py, chromium)
        shown = await chromium.eval(
            "alice", "() => document.querySelector('#merge-result').innerText"
        )
        assert "+# previewed" in shown and "README.md" not in shown

        # someone edits the source branch after the preview (not committed yet)
        other = await py.open(f"demo/{own}:README.md")
        other.insert(0, "not previewed\n")
        await py.flush()
        await chromium.click("alice", "#merge-result .merge-apply")
        # refused: nothing merged, and the preview is made again, saying why
        await chromium.wait(
            "alice",
            "() => document.querySelector('#merge-result .moved') && document.querySelector('#merge-result .merge-apply')",
        )
        shown = await chromium.eval(
            "alice", "() => document.querySelector('#merge-result').innerText"
        )
        assert "has changed since the preview" in shown and "+not previewed" in shown
        assert await git_show(repo, "main:README.md") == readme
        await chromium.screenshot("alice", "preview-made-again")

        await chromium.click("alice", "#merge-result .merge-apply")
        await chromium.wait("alice", MERGED)
        assert await git_show(repo, "main:README.md") == b"not previewed\n" + readme


async def test_apply_goes_through_while_someone_types_in_the_target(
    server: CollabServer, chromium: Chromium, repos: Path
) -> None:
    """Typing in the target moves it (its edits are committed first), which changes nothing
    the preview showed of the source: the apply goes through, the typing kept."""
    http = f"http://127.0.0.1:{server.port}"
    repo = repos / "demo"
    await open_page(chromium, "alice", http)
    own = await chromium.eval("alice", OWN)
    async with Client(server.url, user="alice") as py, Client(server.url, user="tom") as tom:
        await preview_an_edit_of(own, py, chromium)
        target = await tom.open("demo/main:README.md")
        target.insert(0, "typed after the preview\n")
        await tom.flush()
        await chromium.click("alice", "#merge-result .merge-apply")
        await chromium.wait("alice", MERGED)
        assert (await git_show(repo, "main:src/app.py") or b"").endswith(b"# previewed\n")
        readme = await git_show(repo, "main:README.md") or b""
        assert readme.startswith(b"typed after the preview\n")
