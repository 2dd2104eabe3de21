"""Fixtures for the git layer: bare repositories and a git CLI isolated from user config."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dulwich.repo import Repo

GIT_ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith("GIT_")},
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_AUTHOR_NAME": "Git CLI",
    "GIT_AUTHOR_EMAIL": "cli@example.com",
    "GIT_COMMITTER_NAME": "Git CLI",
    "GIT_COMMITTER_EMAIL": "cli@example.com",
    "GIT_TERMINAL_PROMPT": "0",
}

Git = Callable[..., str]


def run_git(
    cwd: Path,
    *args: str,
    stdin: bytes | None = None,
    check: bool = True,
    env: dict[str, str] | None = None,
) -> str:
    """Run the git CLI in ``cwd``; return its stdout (decoded, surrogateescape)."""
    done = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env={**GIT_ENV, **(env or {})},
        input=stdin,
        capture_output=True,
        timeout=60,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {done.stderr.decode(errors='replace')}")
    return done.stdout.decode("utf-8", "surrogateescape")


def git_bytes(cwd: Path, *args: str) -> bytes:
    """Run the git CLI in ``cwd``; return its stdout as bytes."""
    return subprocess.run(
        ["git", *args], cwd=cwd, env=GIT_ENV, capture_output=True, check=True, timeout=60
    ).stdout


@pytest.fixture
def git() -> Git:
    return run_git


@pytest.fixture
def git_out() -> Callable[..., bytes]:
    return git_bytes


def git_result(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the git CLI in ``cwd`` without checking; stdout and stderr as text."""
    return subprocess.run(
        ["git", *args], cwd=cwd, env=GIT_ENV, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def git_run() -> Callable[..., subprocess.CompletedProcess[str]]:
    return git_result


@pytest.fixture
def repo_path(tmp_path: Path) -> Path:
    """An empty bare repository whose HEAD names ``main``."""
    path = tmp_path / "repo.git"
    run_git(tmp_path, "init", "-q", "--bare", "-b", "main", str(path))
    return path


@pytest.fixture
def repo(repo_path: Path) -> Iterator[Repo]:
    opened = Repo(str(repo_path))
    try:
        yield opened
    finally:
        opened.close()
