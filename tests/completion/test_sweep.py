"""Expired offers are swept for as long as the server runs, even after a sweep fails."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from servers import make_config

from collab import CollabServer
from collab.completion import service as completion_service


async def test_a_failing_sweep_does_not_end_the_sweeping(
    repos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(completion_service, "SWEEP_EVERY", 0.01)
    calls = 0
    sweep = completion_service.CompletionService.sweep

    def flaky(self: completion_service.CompletionService, now: float) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bad offer")
        sweep(self, now)

    monkeypatch.setattr(completion_service.CompletionService, "sweep", flaky)
    async with CollabServer(make_config(repos, tmp_path / "data")):
        async with asyncio.timeout(10):
            while calls < 3:  # the first sweep fails; the sweeping goes on
                await asyncio.sleep(0.01)
