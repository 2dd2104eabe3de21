"""Shared fixtures: a demo repository and a real server on a loopback port."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

sys.path.append(str(Path(__file__).parent))  # helpers; the real packages come first

from servers import DEMO_FILES, SECRET, make_config

from collab import CollabServer
from collab.server.auth import TokenAuthenticator
from gitsync import create_demo_repo


@pytest.fixture
def repos(tmp_path: Path) -> Path:
    root = tmp_path / "repos"
    create_demo_repo(root / "demo", DEMO_FILES)
    create_demo_repo(root / "other", {"a.txt": "other repo\n"})
    return root


@pytest.fixture
async def server(repos: Path, tmp_path: Path) -> AsyncIterator[CollabServer]:
    """A dev-mode server (``?user=NAME`` on loopback) with the SQLite store."""
    async with CollabServer(make_config(repos, tmp_path / "data")) as srv:
        yield srv


@pytest.fixture
async def secure_server(repos: Path, tmp_path: Path) -> AsyncIterator[CollabServer]:
    """A server that requires tokens signed with ``SECRET``."""
    async with CollabServer(make_config(repos, tmp_path / "data", secret=SECRET)) as srv:
        yield srv


@pytest.fixture
def tokens() -> TokenAuthenticator:
    return TokenAuthenticator(SECRET)
