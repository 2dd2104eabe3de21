"""Backends for tests and benchmarks: instant, slow, and failing ones that record what they got.

``python -m collab worker --backend fake_backends:slow`` (with this folder on PYTHONPATH)
runs one in a worker process; ``FAKE_DELAY`` sets the slow one's delay in seconds.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable

from collab.completion import Cancelled, Family, Generated, Prompt
from collab.completion.prompts import cut_single_line


class FakeBackend:
    """Answers ``answer`` (or, when ``None``, ``<n>`` numbered by call) after a delay, or
    raises ``Cancelled`` as soon as its job is cancelled."""

    def __init__(
        self,
        answer: str | None = "COMPLETION",
        *,
        delay: float = 0.0,
        delays: list[float] | None = None,
        capacity: int = 4,
        fail: bool = False,
        family: Family = Family.PLAIN,
    ) -> None:
        self.answer = answer
        self.delay = delay
        self.delays = list(delays or [])  # per call, before ``delay`` applies
        self._capacity = capacity
        self.fail = fail
        self._family = family
        self.prompts: list[Prompt] = []
        self.cancelled = 0
        self.finished = 0
        self.started = asyncio.Event()

    @property
    def name(self) -> str:
        return "fake"

    @property
    def family(self) -> Family:
        return self._family

    @property
    def capacity(self) -> int:
        return self._capacity

    def count_tokens(self, text: str) -> int:
        return len(text) // 3

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def complete(self, prompt: Prompt, cancel: threading.Event) -> Generated:
        if cancel.is_set():
            self.cancelled += 1
            raise Cancelled()
        self.prompts.append(prompt)
        self.started.set()
        delay = self.delays.pop(0) if self.delays else self.delay
        waited = 0.0
        while waited < delay:
            if cancel.is_set():
                self.cancelled += 1
                raise Cancelled()
            await asyncio.sleep(0.01)
            waited += 0.01
        if self.fail:
            raise RuntimeError("model exploded")
        self.finished += 1
        text = self.answer if self.answer is not None else f"<{len(self.prompts)}>"
        if prompt.single_line:
            text = cut_single_line(text)[0]
        return Generated(text, 1)


def slow() -> FakeBackend:
    return FakeBackend("SLOW", delay=float(os.environ.get("FAKE_DELAY", "30")), capacity=1)


def instant() -> FakeBackend:
    return FakeBackend("INSTANT")


class StreamingFake(FakeBackend):
    """Hands out its answer a few characters at a time, ``step`` seconds apart."""

    def __init__(self, answer: str, *, step: float = 0.01, **options: object) -> None:
        super().__init__(answer, **options)  # type: ignore[arg-type]
        self.step = step
        self.streamed = 0

    async def complete_streaming(
        self, prompt: Prompt, cancel: threading.Event, on_text: Callable[[str], None]
    ) -> Generated:
        self.streamed += 1
        text = self.answer or ""
        for end in range(3, len(text) + 3, 3):
            if cancel.is_set():
                raise Cancelled()
            on_text(text[:end])
            await asyncio.sleep(self.step)
        return await self.complete(prompt, cancel)
