"""Reading what the engine wrote with the real git CLI, and waiting for it."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

__all__ = ["git", "head_file", "show", "until"]


def git(repo: Path, *args: str, check: bool = True, input_text: str | None = None) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args],
        capture_output=True,
        text=True,
        check=False,
        input=input_text,
        env={
            **os.environ,
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@x",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@x",
        },
    )
    if check and done.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {done.stderr}")
    return done.stdout


def show(repo: Path, branch: str, path: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), "show", f"{branch}:{path}"], capture_output=True, check=False
    )
    return done.stdout.decode("utf-8") if done.returncode == 0 else f"<missing: {done.stderr!r}>"


def head_file(repo: Path, path: str, branch: str = "main") -> tuple[str, str]:
    """A branch's head and the file ``path`` there, as git itself reads them."""
    return git(repo, "rev-parse", branch).strip(), git(repo, "show", f"{branch}:{path}")


async def until(predicate: object, timeout: float = 10.0, what: str = "condition") -> None:
    assert callable(predicate)
    async with asyncio.timeout(timeout):
        while True:
            value = predicate()
            if asyncio.iscoroutine(value):
                value = await value
            if value:
                return
            await asyncio.sleep(0.05)
