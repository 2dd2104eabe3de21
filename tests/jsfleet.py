"""Asyncio driver for ``tests/js/fleet.mjs``: many stock Yjs clients in one Node process.

The Node side hosts any number of named clients, each a ``Y.Doc`` plus a stock
y-websocket ``WebsocketProvider``, and speaks newline-delimited JSON on
stdin/stdout. :class:`JsFleet` spawns it, numbers every command with an ``id``
and matches the replies, so several slow commands can be in flight at once::

    async with JsFleet() as fleet:
        await fleet.call_ok("open", client="a", url=url, room="demo/main:README.md",
                            params={"user": "alice"})
        await fleet.call_ok("insert", client="a", index=0, text="hi")
        reply = await fleet.call("wait_text", client="a", contains=["hi"])
        assert reply["ok"], reply

:meth:`JsFleet.call` returns the reply dict whatever its ``ok``;
:meth:`JsFleet.call_ok` raises :class:`JsFleetError` when ``ok`` is false.
The command protocol is documented at the top of ``tests/js/fleet.mjs``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
from collections import deque
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["DEFAULT_NODE_DIR", "JsFleet", "JsFleetError", "js_available", "require_js"]

DEFAULT_NODE_DIR = Path(__file__).resolve().parent / "js"
"""Directory holding ``fleet.mjs``, ``package.json`` and (after ``npm ci``) ``node_modules``."""

_STREAM_LIMIT = 64 * 1024 * 1024  # replies carry whole documents; lift asyncio's 64 KiB default
_STDERR_KEEP = 200


def js_available(node_dir: str | os.PathLike[str] | None = None) -> bool:
    """Return True when ``node`` is on PATH and the npm packages are installed."""
    base = Path(node_dir) if node_dir is not None else DEFAULT_NODE_DIR
    if shutil.which("node") is None:
        return False
    modules = base / "node_modules"
    return all((modules / pkg / "package.json").is_file() for pkg in ("yjs", "y-websocket", "ws"))


def require_js() -> None:
    """Fail the calling test if Node.js or the npm packages are missing: ``make test`` (and
    ``make setup``) install them, so their absence is a broken set-up, not a reason to skip."""
    if not js_available():
        import pytest

        pytest.fail(
            "Node.js or the npm packages under tests/js are missing: run `make setup` "
            "(it runs `npm ci` in tests/js)",
            pytrace=False,
        )


class JsFleetError(RuntimeError):
    """A command failed (``ok: false``) or the Node process went away."""

    def __init__(self, message: str, reply: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.reply: dict[str, Any] = reply if reply is not None else {}


class JsFleet:
    """One ``node fleet.mjs`` child process, driven over JSON lines.

    ``reply_timeout`` (seconds) bounds how long :meth:`call` waits for a reply
    on the Python side; commands that carry ``timeout_ms`` get that much extra.
    """

    def __init__(
        self,
        node_dir: str | os.PathLike[str] | None = None,
        *,
        node: str = "node",
        reply_timeout: float = 30.0,
    ) -> None:
        self.node_dir: Path = Path(node_dir) if node_dir is not None else DEFAULT_NODE_DIR
        self.node = node
        self.reply_timeout = reply_timeout
        self.stderr_lines: deque[str] = deque(maxlen=_STDERR_KEEP)
        self._proc: asyncio.subprocess.Process | None = None
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._reader: asyncio.Task[None] | None = None
        self._err_reader: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()
        self._closed_error: JsFleetError | None = None

    # -- lifecycle -----------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True while the Node process is alive."""
        return self._proc is not None and self._proc.returncode is None

    async def start(self, node_dir: str | os.PathLike[str] | None = None) -> JsFleet:
        """Spawn ``node fleet.mjs`` in ``node_dir`` (default: ``tests/js``)."""
        if self._proc is not None:
            raise JsFleetError("fleet already started")
        if node_dir is not None:
            self.node_dir = Path(node_dir)
        script = self.node_dir / "fleet.mjs"
        if not script.is_file():
            raise JsFleetError(f"{script} not found")
        self._closed_error = None
        self._proc = await asyncio.create_subprocess_exec(
            self.node,
            str(script),
            cwd=str(self.node_dir),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=_STREAM_LIMIT,
        )
        self._reader = asyncio.create_task(self._read_stdout(), name="jsfleet-stdout")
        self._err_reader = asyncio.create_task(self._read_stderr(), name="jsfleet-stderr")
        await self.call_ok("ping")
        return self

    async def stop(self, timeout: float = 10.0) -> int | None:
        """Ask the fleet to shut down (destroying every provider); kill it if it hangs.

        Returns the process exit code (None if it was never started).
        """
        proc = self._proc
        if proc is None:
            return None
        if proc.returncode is None:
            with contextlib.suppress(JsFleetError, TimeoutError, ConnectionError):
                await asyncio.wait_for(self.call("shutdown"), timeout)
            if proc.stdin is not None and not proc.stdin.is_closing():
                proc.stdin.close()
                with contextlib.suppress(ConnectionError, BrokenPipeError):
                    await proc.stdin.wait_closed()
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        for task in (self._reader, self._err_reader):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                    await asyncio.wait_for(task, timeout)
        self._fail_pending(JsFleetError("fleet stopped"))
        return proc.returncode

    async def __aenter__(self) -> JsFleet:
        if self._proc is None:
            await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- commands ------------------------------------------------------------------

    async def call(self, cmd: str, **kw: Any) -> dict[str, Any]:
        """Send command ``cmd`` with fields ``kw``; return its reply (``ok`` true or false).

        Raises :class:`JsFleetError` if the process is gone and ``TimeoutError``
        if no reply arrives in time.
        """
        proc = self._proc
        if proc is None or proc.stdin is None:
            raise JsFleetError("fleet not started")
        if self._closed_error is not None:
            raise self._closed_error
        msg_id = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = fut
        line = json.dumps({**kw, "cmd": cmd, "id": msg_id}, ensure_ascii=False) + "\n"
        try:
            async with self._write_lock:
                proc.stdin.write(line.encode("utf-8"))
                await proc.stdin.drain()
        except (ConnectionError, RuntimeError) as exc:
            self._pending.pop(msg_id, None)
            raise JsFleetError(f"cannot send {cmd!r}: {exc}{self._stderr_tail()}") from exc
        timeout = self.reply_timeout
        timeout_ms = kw.get("timeout_ms")
        if isinstance(timeout_ms, int | float):
            timeout += float(timeout_ms) / 1000.0
        interval_ms, count = kw.get("interval_ms"), kw.get("count")
        if isinstance(interval_ms, int | float) and isinstance(count, int):
            timeout += float(interval_ms) * count / 1000.0
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._pending.pop(msg_id, None)

    async def call_ok(self, cmd: str, **kw: Any) -> dict[str, Any]:
        """Like :meth:`call`, but raise :class:`JsFleetError` unless the reply is ``ok``."""
        reply = await self.call(cmd, **kw)
        if not reply.get("ok"):
            raise JsFleetError(f"{cmd} failed: {reply.get('error')} (reply: {reply})", reply)
        return reply

    # -- internals -----------------------------------------------------------------

    def _stderr_tail(self, n: int = 20) -> str:
        if not self.stderr_lines:
            return ""
        return "\nfleet stderr:\n" + "\n".join(list(self.stderr_lines)[-n:])

    def _fail_pending(self, error: JsFleetError) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(error)
        self._pending.clear()

    async def _read_stdout(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        while True:
            raw = await proc.stdout.readline()
            if not raw:
                break
            try:
                reply = json.loads(raw)
            except json.JSONDecodeError:
                self.stderr_lines.append(f"<non-JSON stdout> {raw!r}")
                continue
            if not isinstance(reply, dict):
                continue
            msg_id = reply.get("id")
            fut = self._pending.get(msg_id) if isinstance(msg_id, int) else None
            if fut is not None and not fut.done():
                fut.set_result(reply)
        await proc.wait()
        # Give the stderr reader a moment so the error message carries the tail.
        if self._err_reader is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._err_reader), 1.0)
        self._closed_error = JsFleetError(
            f"fleet process exited with code {proc.returncode}{self._stderr_tail()}"
        )
        self._fail_pending(self._closed_error)

    async def _read_stderr(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stderr is not None
        while True:
            raw = await proc.stderr.readline()
            if not raw:
                break
            self.stderr_lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
