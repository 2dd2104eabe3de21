"""Reading what the engine wrote with the real git CLI, and waiting for it."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import string
import subprocess
from pathlib import Path

__all__ = ["git", "git_refused", "head_file", "require_git", "show", "skewed_text", "until"]


def require_git() -> None:
    """Skip the calling test if the git CLI is missing; under CI (``CI=true``), fail it."""
    if shutil.which("git") is None:
        import pytest

        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but the git CLI is missing", pytrace=False)
        pytest.skip("the git CLI is missing")


def _run(
    repo: Path, args: tuple[str, ...], input_text: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
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


def git(repo: Path, *args: str, check: bool = True, input_text: str | None = None) -> str:
    done = _run(repo, args, input_text)
    if check and done.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {done.stderr}")
    return done.stdout


async def git_refused(repo: Path, *args: str) -> str:
    """Run a git command that must fail, in a thread (a server under test may run on this
    event loop); what it printed on stderr."""
    done = await asyncio.to_thread(_run, repo, args)
    assert done.returncode != 0, (args, done.stdout)
    return done.stderr


def is_ancestor(repo: Path, commit: str, of: str) -> bool:
    """Whether ``commit`` is in the history of ``of`` (itself included)."""
    done = subprocess.run(
        ["git", "-C", str(repo), "merge-base", "--is-ancestor", commit, of], capture_output=True
    )
    return done.returncode == 0


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


def skewed_text(seed: int, size: int) -> bytes:
    """Printable text with an uneven mix of characters, like source code: zlib opens its
    stream with a dynamic block header of tens of bytes, before any of the text."""
    rng = random.Random(seed)
    weights = [1 / (i + 1) ** rng.uniform(0.5, 1.5) for i in range(len(string.printable))]
    rng.shuffle(weights)
    return "".join(rng.choices(string.printable, weights, k=size)).encode()
