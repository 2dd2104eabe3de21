"""A real ``redis-server`` for the tests: started on a free loopback port in a directory of
its own, with the append-only file fsynced on every write (what the cluster needs for an
acknowledged update to survive a crash of Redis), and stopped, paused or restarted at will.

``make test`` installs redis-server where it is missing, so a missing binary fails the test
that needs it instead of skipping it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["RedisProcess", "require_redis"]


def require_redis() -> str:
    """The path of ``redis-server``; fail the calling test if it is missing."""
    found = shutil.which("redis-server")
    if found is None:
        import pytest

        pytest.fail(
            "redis-server is missing: run `make setup` (it installs Debian's redis-server)",
            pytrace=False,
        )
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisProcess:
    """One ``redis-server`` child process; ``url`` names it for redis-py."""

    def __init__(
        self, directory: Path, *, appendfsync: str = "always", extra: tuple[str, ...] = ()
    ) -> None:
        self.binary = require_redis()
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.appendfsync = appendfsync
        self.extra = extra  # more of redis-server's options
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--appendonly",
            "yes",
            "--appendfsync",
            self.appendfsync,
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            str(self.directory / "redis.log"),
            *self.extra,
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = self.directory / "redis.log"
                said = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise RuntimeError(f"redis-server exited: {said}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError("redis-server did not answer within 10 s")

    def kill(self) -> None:
        """``kill -9``: what Redis had fsynced to its append-only file is all that is left."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.kill()
        self.start()

    def restart_empty(self) -> None:
        """``kill -9``, then start again with its files gone: a Redis that kept nothing."""
        self.kill()
        shutil.rmtree(self.directory)
        self.directory.mkdir()
        self.start()

    def copy(self, to: Path) -> None:
        """Copy its files as they are now (what a backup of them would hold)."""
        shutil.copytree(self.directory, to)

    def restart_from(self, copy: Path) -> None:
        """``kill -9``, then start again on the files of an earlier ``copy``: a Redis that
        came back with older data (a backup, or writes it had not fsynced)."""
        self.kill()
        shutil.rmtree(self.directory)
        shutil.copytree(copy, self.directory)
        self.start()

    def pause(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
