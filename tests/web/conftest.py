"""Fixtures for the web editor's tests: one real Chromium per test, screenshots kept."""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator

import pytest
from chromium import ARTIFACTS, Chromium, require_browser


@pytest.fixture
async def chromium(request: pytest.FixtureRequest) -> AsyncIterator[Chromium]:
    """Chromium, its screenshots under ``test-artifacts/web/<test>/``."""
    require_browser()
    folder = ARTIFACTS / re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)
    shutil.rmtree(folder, ignore_errors=True)
    async with Chromium(folder) as browser:
        yield browser
