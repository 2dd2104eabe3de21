"""Fixtures for completion tests: a server whose embedded worker runs a chosen backend."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # fake_backends, tiny_model

from collab import CollabServer, ServerConfig
from collab.completion import CompletionBackend
from gitsync import create_demo_repo

FILES = {
    "src/app.py": "import os\n\n\ndef greet(name):\n    return 'hello ' + name\n",
    "src/util.py": "def double(value):\n    return value * 2\n",
    "docs/unicode.txt": "héllo wörld, 世界, 🎉 emoji\n",
}

ServerFactory = Callable[..., AbstractAsyncContextManager[CollabServer]]


@pytest.fixture
def code_repos(tmp_path: Path) -> Path:
    root = tmp_path / "repos"
    create_demo_repo(root / "demo", FILES)
    return root


@pytest.fixture
def make_server(code_repos: Path, tmp_path: Path) -> ServerFactory:
    """``async with make_server(backend, **config) as server``: ``backend`` replaces the
    embedded worker's (``None``: no embedded worker; remote workers only)."""
    count = 0

    @asynccontextmanager
    async def factory(
        backend: CompletionBackend | None, **overrides: Any
    ) -> AsyncIterator[CollabServer]:
        nonlocal count
        count += 1
        overrides.setdefault("completion_backend", "none")
        config = ServerConfig(
            repos=code_repos, data_dir=tmp_path / f"data{count}", port=0, grace=0.2, heartbeat=5.0
        )
        for key, value in overrides.items():
            setattr(config, key, value)
        server = CollabServer(config)
        server.completion.backend = backend
        async with server:
            yield server

    return factory


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained code model (see ``tiny_model``); skips without torch."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tiny_model import build

    return build(tmp_path_factory.mktemp("tiny-coder"))
