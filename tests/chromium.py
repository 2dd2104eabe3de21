"""Asyncio driver for ``tests/web/browser.cjs``: real Chromium pages driven by playwright-core.

Each named page is a browser context of its own (another person). Commands are numbered
and matched with their replies, so several can be in flight at once::

    async with Chromium(artifacts) as chromium:
        await chromium.open("alice", f"{http}/?user=alice#demo/main:README.md")
        await chromium.type("alice", "héllo 👍🏽")
        text = await chromium.eval("alice", "() => window.collab.editor.ytext.toString()")

The command list is at the top of ``browser.cjs``. :func:`require_browser` fails the calling
test when Chromium, Node.js, playwright-core or the built app is missing (``make test``
installs and builds all four).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["WEB_DIR", "BrowserError", "Chromium", "chromium_path", "require_browser"]

ROOT = Path(__file__).resolve().parent.parent
WEB_DIR = ROOT / "collab" / "web"
DRIVER = Path(__file__).resolve().parent / "web" / "browser.cjs"
ARTIFACTS = ROOT / "test-artifacts" / "web"


def chromium_path() -> str | None:
    """The Chromium to drive: ``$CHROMIUM``, else Debian's ``chromium`` on PATH."""
    return (
        os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    )


def require_browser() -> None:
    """Fail (never skip) the calling test when what it drives is missing."""
    import pytest

    missing = []
    if chromium_path() is None:
        missing.append("Chromium (apt-get install chromium)")
    if shutil.which("node") is None:
        missing.append("Node.js")
    if not (WEB_DIR / "node_modules" / "playwright-core" / "package.json").is_file():
        missing.append("playwright-core (npm ci in collab/web)")
    if not (WEB_DIR / "dist" / "index.html").is_file():
        missing.append("the built app (npm run build in collab/web)")
    if missing:
        pytest.fail(
            "missing for the browser tests: " + ", ".join(missing) + ": run `make setup`",
            pytrace=False,
        )


class BrowserError(RuntimeError):
    """A command failed in the browser, or the driver went away."""


class Chromium:
    """One Chromium, driven by one ``node browser.cjs`` process; screenshots go under
    ``artifacts`` (numbered in the order they are taken)."""

    def __init__(self, artifacts: Path, *, reply_timeout: float = 60.0) -> None:
        self.artifacts = artifacts
        self.reply_timeout = reply_timeout
        self._proc: asyncio.subprocess.Process | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._shots = itertools.count(1)

    async def __aenter__(self) -> Chromium:
        env = dict(os.environ, NODE_PATH=str(WEB_DIR / "node_modules"))
        env["CHROMIUM"] = chromium_path() or "chromium"
        self._proc = await asyncio.create_subprocess_exec(
            "node",
            str(DRIVER),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
            limit=16 * 1024 * 1024,
        )
        self._reader = asyncio.create_task(self._read())
        self.artifacts.mkdir(parents=True, exist_ok=True)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        proc = self._proc
        if proc is None:
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.call("shutdown"), 10)
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        while line := await self._proc.stdout.readline():
            reply = json.loads(line)
            future = self._waiting.pop(reply.get("id"), None)
            if future is not None and not future.done():
                future.set_result(reply)
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(BrowserError("the browser driver exited"))

    async def call(self, cmd: str, **args: Any) -> dict[str, Any]:
        """Run one command; its reply, or ``BrowserError``."""
        assert self._proc is not None and self._proc.stdin is not None
        command_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[command_id] = future
        self._proc.stdin.write(json.dumps({"id": command_id, "cmd": cmd, **args}).encode() + b"\n")
        await self._proc.stdin.drain()
        extra = args.get("timeout_ms", 0) / 1000
        reply = await asyncio.wait_for(future, self.reply_timeout + extra)
        if not reply["ok"]:
            raise BrowserError(f"{cmd} {args}: {reply['error']}")
        return reply

    # -- the commands, typed ---------------------------------------------------------------

    async def open(self, page: str, url: str) -> None:
        await self.call("open", page=page, url=url)

    async def eval(self, page: str, fn: str, arg: Any = None) -> Any:
        return (await self.call("eval", page=page, fn=fn, arg=arg)).get("value")

    async def wait(self, page: str, fn: str, arg: Any = None, timeout: float = 10.0) -> Any:
        reply = await self.call("wait", page=page, fn=fn, arg=arg, timeout_ms=int(timeout * 1000))
        return reply.get("value")

    async def type(self, page: str, text: str, delay_ms: int = 0) -> None:
        await self.call("type", page=page, text=text, delay_ms=delay_ms)

    async def insert(self, page: str, text: str) -> None:
        await self.call("insert", page=page, text=text)

    async def press(self, page: str, key: str) -> None:
        await self.call("press", page=page, key=key)

    async def down(self, page: str, key: str) -> None:
        """Press ``key`` and hold it (until :meth:`up`)."""
        await self.call("down", page=page, key=key)

    async def up(self, page: str, key: str) -> None:
        await self.call("up", page=page, key=key)

    async def click(self, page: str, selector: str) -> None:
        await self.call("click", page=page, selector=selector)

    async def select(self, page: str, selector: str, value: str) -> None:
        await self.call("select", page=page, selector=selector, value=value)

    async def offline(self, page: str, offline: bool) -> None:
        await self.call("offline", page=page, offline=offline)

    async def reload(self, page: str) -> None:
        await self.call("reload", page=page)

    async def errors(self, page: str) -> list[str]:
        """What ``page`` logged as an error (``console.error``, an uncaught exception)."""
        return list((await self.call("errors", page=page))["errors"])

    async def close(self, page: str) -> None:
        await self.call("close", page=page)

    async def leave(self, page: str) -> bool:
        """Close ``page`` as a person leaving it would: whether the browser asked first
        (``beforeunload``; the person then stays, and the page is kept) or closed it."""
        return bool((await self.call("leave", page=page))["asked"])

    async def screenshot(self, page: str, step: str) -> Path:
        """Save ``page`` as ``NN-<page>-<step>.png`` under the artifacts folder."""
        path = self.artifacts / f"{next(self._shots):02d}-{page}-{step}.png"
        await self.call("screenshot", page=page, path=str(path))
        return path
