"""Run ``collab serve`` as a real child process that tests can ``kill -9`` and restart."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

__all__ = ["ServerProcess", "free_port", "permissions_bind"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def permissions_bind() -> tuple[str, ...]:
    """A command prefix under which a file's mode binds the child as it binds any user: none
    for a user that is not root; for root, ``setpriv`` without the capabilities that let
    root write and search whatever it likes (the test is skipped without ``setpriv``)."""
    if os.geteuid() != 0:
        return ()
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root, and no setpriv to drop the capabilities that bypass modes")
    capabilities = "-dac_override,-dac_read_search"
    return (setpriv, f"--inh-caps={capabilities}", f"--bounding-set={capabilities}", "--")


class ServerProcess:
    """``python -m collab serve`` on a fixed port, so clients can reconnect after a restart."""

    def __init__(
        self,
        repos: Path,
        data_dir: Path,
        *,
        secret: bytes | None = None,
        extra_args: tuple[str, ...] = (),
        prefix: tuple[str, ...] = (),
        preexec: Callable[[], None] | None = None,
    ) -> None:
        self.extra_args = extra_args
        self.prefix = prefix  # run the server through this command (setpriv ...)
        self.preexec = preexec  # called in the child before it runs the server (limits)
        self.repos = repos
        self.data_dir = data_dir
        self.secret = secret
        self.port = free_port()
        self.proc: asyncio.subprocess.Process | None = None
        self.log = data_dir.parent / "server.log"

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def start(self, timeout: float = 20.0) -> None:
        env = dict(os.environ)
        env.pop("COLLAB_SECRET", None)
        if self.secret is not None:
            env["COLLAB_SECRET"] = self.secret.decode()
        args = [*self.prefix, sys.executable, "-m", "collab", "serve", "--repos", str(self.repos)]
        args += ["--data-dir", str(self.data_dir), "--port", str(self.port), "--grace", "0.5"]
        args += self.extra_args
        log = self.log.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            *args, stdout=asyncio.subprocess.PIPE, stderr=log, env=env, preexec_fn=self.preexec
        )
        log.close()
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                line = await self.proc.stdout.readline()
                if not line:
                    raise RuntimeError(f"server exited: see {self.log}")
                if b"listening on" in line:
                    break
        asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        proc = self.proc
        if proc is not None and proc.stdout is not None:
            while await proc.stdout.readline():
                pass

    async def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()
        self.proc = None

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                async with asyncio.timeout(10):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self.proc = None
