"""What the web editor's tests do in a page, as small helpers over :class:`Chromium`."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

from chromium import Chromium

__all__ = [
    "NOTICES",
    "STATUS",
    "TEXT",
    "YTEXT",
    "carets",
    "git_show",
    "open_page",
    "wait_git",
    "wait_synced",
]

TEXT = "() => window.collab.editor.view.state.doc.toString()"
"""What the page's editor shows."""
YTEXT = "() => window.collab.editor.ytext.toString()"
"""The page's live document."""
STATUS = "() => document.querySelector('#status').textContent"
"""The connection's state, as the page's header shows it."""
NOTICES = "() => document.querySelector('#notices').innerText"
"""The notices above the editor."""
_SYNCED = """(doc) => {
  const editor = window.collab?.editor
  return !!editor && (doc === null || editor.docId === doc) && editor.provider.synced
    && editor.provider.wsconnected
}"""
_CARETS = (
    "() => [...document.querySelectorAll('.cm-ySelectionInfo')].map(e => e.textContent).sort()"
)


async def open_page(
    chromium: Chromium, page: str, http: str, doc: str | None = None, *, user: str | None = None
) -> None:
    """Open the app as ``user`` (default: ``page``) on ``doc`` (default: their own branch)
    and wait until its editor is synced with the server."""
    url = f"{http}/?user={user or page}" + (f"#{doc}" if doc else "")
    await chromium.open(page, url)
    await wait_synced(chromium, page, doc)


async def wait_synced(
    chromium: Chromium, page: str, doc: str | None = None, timeout: float = 15.0
) -> None:
    await chromium.wait(page, _SYNCED, doc, timeout=timeout)


async def carets(chromium: Chromium, page: str) -> list[str]:
    """The names on the remote carets ``page`` shows."""
    return list(await chromium.eval(page, _CARETS))


async def git_show(repo: Path, spec: str) -> bytes | None:
    """``git show SPEC`` in ``repo`` (the bytes git has), or ``None`` if git has no such file."""
    proc = await asyncio.create_subprocess_exec(
        "git", "-C", str(repo), "show", spec, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    out, _ = await proc.communicate()
    return out if proc.returncode == 0 else None


async def wait_git(repo: Path, spec: str, expected: bytes, timeout: float = 20.0) -> None:
    """Wait until ``git show SPEC`` gives ``expected`` (the continuous commits follow typing
    by a second or so); fail with what git has."""
    last: bytes | None = None
    try:
        async with asyncio.timeout(timeout):
            while (last := await git_show(repo, spec)) != expected:
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"git show {spec} is {last!r}, not {expected!r}") from None
