"""The transformers backend on CPU with a tiny model trained here (no download)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from tiny_model import EXAMPLES

from collab import Client
from collab.completion import Cancelled, Family, Prompt, PromptParts, render
from collab.completion.executor import Executor, JobSpec
from collab.completion.transformers_backend import TransformersBackend

CALC, IMPORTS, HELLO = (parts for parts, _ in EXAMPLES)


@pytest.fixture
def model_dir(tiny_model_dir: Path) -> Path:
    return tiny_model_dir


@pytest.fixture
async def backend(model_dir: Path) -> AsyncIterator[TransformersBackend]:
    backend = TransformersBackend(model_dir, max_batch=8)
    await backend.start()
    try:
        yield backend
    finally:
        await backend.stop()


def prompt(parts: PromptParts, *, single_line: bool = True, max_tokens: int = 32) -> Prompt:
    return Prompt(render(Family.QWEN_CODER, parts), max_tokens, single_line)


async def test_loads_from_a_directory_on_cpu_and_detects_the_family(
    backend: TransformersBackend, model_dir: Path
) -> None:
    assert TransformersBackend(model_dir).family is Family.QWEN_CODER  # from config.json
    assert backend.family is Family.QWEN_CODER
    assert backend.device == "cpu" and backend.dtype == "float32"
    assert backend.name == model_dir.name
    text = render(Family.QWEN_CODER, CALC).text
    assert backend.count_tokens("<|fim_prefix|>") == 1  # special tokens stay whole
    assert backend.count_tokens(text) < len(text)


async def test_fim_completion_single_line_and_block(backend: TransformersBackend) -> None:
    line = await backend.complete(prompt(CALC), threading.Event())
    assert line.text == "a + b"  # stopped at the end of the line
    block = await backend.complete(prompt(CALC, single_line=False), threading.Event())
    assert block.text == "a + b\n\nprint(add(1, 2))\n"  # stopped at <|endoftext|>
    assert block.tokens > line.tokens
    assert backend.stats.steps[-2] < backend.stats.steps[-1]  # generation really stopped


class WatchedFlag(threading.Event):
    """A cancel flag that counts the backend's looks at it: ``complete()`` looks once, the
    generation thread once as it forms the batch, then once per decoding step. At look
    ``raise_at`` it raises itself; at look ``hold_at`` it holds the generation thread (until
    ``release``), having set ``held``. Generation's progress is known without a clock."""

    def __init__(self, *, raise_at: int = 0, hold_at: int = 0) -> None:
        super().__init__()
        self.looks = 0
        self.raise_at, self.hold_at = raise_at, hold_at
        self.held, self.release = threading.Event(), threading.Event()

    def is_set(self) -> bool:
        self.looks += 1
        if self.looks == self.raise_at:
            self.set()
        if self.looks == self.hold_at:
            self.held.set()
            self.release.wait(60)
        return super().is_set()


@pytest.fixture
async def endless(model_dir: Path) -> AsyncIterator[TransformersBackend]:
    """Ignores end-of-text tokens: a job runs to its token limit unless stopped otherwise."""
    backend = TransformersBackend(model_dir, max_batch=8, ignore_eos=True)
    await backend.start()
    try:
        yield backend
    finally:
        await backend.stop()


async def test_concurrent_requests_are_batched(endless: TransformersBackend) -> None:
    backend = endless  # its first job runs to its limit and keeps the model busy
    flag = WatchedFlag(hold_at=3)  # held at its first decoding step until the others queue
    busy = asyncio.create_task(
        backend.complete(prompt(HELLO, single_line=False, max_tokens=60), flag)
    )
    assert await asyncio.to_thread(flag.held.wait, 30)
    waiting = [
        asyncio.ensure_future(backend.complete(prompt(p), threading.Event()))
        for p in (CALC, IMPORTS, HELLO)
    ]
    await asyncio.sleep(0)  # each has queued its request (complete() queues before it waits)
    flag.release.set()
    results = await asyncio.gather(*waiting)
    await busy
    assert backend.stats.batches[-2] == 1  # the busy job ran alone
    assert backend.stats.batches[-1] == 3  # one left-padded batch of different lengths
    assert [r.text for r in results[:2]] == ["a + b", "sys"]  # each ends at its line end
    assert results[2].text.startswith("hello")  # (it has no line end; it ran to its limit)


async def test_cancellation_stops_generation_mid_way(endless: TransformersBackend) -> None:
    backend = endless  # never ends by itself: only the cancel flag can stop it early
    cancel = WatchedFlag(raise_at=12)  # raised at the tenth decoding step
    task = asyncio.create_task(
        backend.complete(prompt(CALC, single_line=False, max_tokens=600), cancel)
    )
    with pytest.raises(Cancelled):
        await task
    assert 0 < backend.stats.steps[-1] <= 12  # stopped at the step it was raised
    skipped = threading.Event()
    skipped.set()
    with pytest.raises(Cancelled):  # a job cancelled before it starts never reaches the model
        await backend.complete(prompt(CALC), skipped)


async def test_executor_trims_to_the_tokenizer_budget(backend: TransformersBackend) -> None:
    executor = Executor(backend, max_prompt_tokens=64)
    long = PromptParts("demo", "src/calc.py", "x = 1\n" * 200 + CALC.prefix, CALC.suffix)
    output = await executor.run(JobSpec("j", long, 8, True), threading.Event())
    assert output.model == backend.name and output.model_ms > 0
    seen = backend.count_tokens(render(Family.QWEN_CODER, long, 64, backend.count_tokens).text)
    assert seen <= 64


async def test_end_to_end_through_the_engine(make_server: Any, model_dir: Path) -> None:
    backend = TransformersBackend(model_dir, max_batch=4)
    async with make_server(backend) as server, Client(server.url, user="alice") as a:
        doc = await a.open("demo/main:src/calc.py")  # a new, empty file
        doc.insert(0, CALC.prefix + CALC.suffix)
        await a.flush()
        reply = await a.complete(doc, len(CALC.prefix))
        assert reply["text"] == "a + b"
        assert reply["model"] == model_dir.name
        await a.accept(reply)
        await doc.wait_for(lambda t: t == "def add(a, b):\n    return a + b\n")
