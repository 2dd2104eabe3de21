"""The ``CompletionBackend`` contract, run by every implementation."""

from __future__ import annotations

import asyncio
import importlib.util
import threading
from collections.abc import AsyncIterator

import pytest
from fake_backends import FakeBackend
from test_wire_and_http import FakeOpenAI

from collab.completion import (
    Cancelled,
    CompletionBackend,
    Family,
    Prompt,
    PromptParts,
    render,
)
from collab.completion.http_backend import HttpBackend
from collab.completion.local_backend import LocalBackend
from collab.completion.prompts import cut_single_line

HAVE_TORCH = all(importlib.util.find_spec(m) for m in ("torch", "transformers"))
KINDS = ["local", "http", "fake", "transformers"]
PARTS = PromptParts("demo", "src/calc.py", "def add(a, b):\n    return ", "\n")


@pytest.fixture(params=KINDS)
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[CompletionBackend]:
    kind = request.param
    if kind == "transformers" and not HAVE_TORCH:
        pytest.skip("torch and transformers are not installed")
    async with FakeOpenAI() as server:
        made: CompletionBackend
        if kind == "local":
            made = LocalBackend()
        elif kind == "http":
            made = HttpBackend(server.url, model="Qwen2.5-Coder-1.5B")
        elif kind == "fake":
            made = FakeBackend("a + b\nmore")
        else:
            from collab.completion.transformers_backend import TransformersBackend

            made = TransformersBackend(request.getfixturevalue("tiny_model_dir"))
        await made.start()
        try:
            yield made
        finally:
            await made.stop()


def prompt(backend: CompletionBackend, *, single_line: bool = True) -> Prompt:
    return Prompt(render(backend.family, PARTS, 512, backend.count_tokens), 16, single_line)


async def test_describes_itself(backend: CompletionBackend) -> None:
    assert isinstance(backend, CompletionBackend)
    assert backend.name and isinstance(backend.family, Family)
    assert backend.capacity >= 1
    assert 0 < backend.count_tokens("def add(a, b):") <= len("def add(a, b):")


async def test_completes_concurrently_up_to_capacity(backend: CompletionBackend) -> None:
    results = await asyncio.gather(
        *(backend.complete(prompt(backend), threading.Event()) for _ in range(backend.capacity))
    )
    for result in results:
        assert isinstance(result.text, str) and result.tokens >= 0
        assert not cut_single_line(result.text)[1]  # a single-line answer ends at its line end


async def test_a_job_cancelled_before_it_starts_raises_cancelled(
    backend: CompletionBackend,
) -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        await backend.complete(prompt(backend), cancel)
