"""Running one completion job on a backend: render the prompt, generate, clean the text up.

The same code runs in the engine's embedded worker and in remote ``collab worker`` processes.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass

from .backend import Cancelled, CompletionBackend, Prompt
from .prompts import PromptParts, Rendered, cut_at_stop, cut_single_line, render

__all__ = ["Executor", "JobOutput", "JobSpec", "finish"]


@dataclass(frozen=True, slots=True)
class JobSpec:
    """A job as a worker receives it."""

    id: str
    parts: PromptParts
    max_tokens: int
    single_line: bool


@dataclass(frozen=True, slots=True)
class JobOutput:
    """A finished job; times in milliseconds, measured in the worker."""

    text: str
    queue_ms: float  # waiting in the worker for a free slot
    prompt_ms: float  # rendering and trimming the prompt
    model_ms: float  # generating
    tokens: int
    model: str


def finish(text: str, rendered: Rendered, single_line: bool, max_chars: int) -> str:
    """Cut a raw completion at stop strings and (single-line) at the end of its line, drop
    the part that repeats what already follows the cursor, and cap its size."""
    text, _ = cut_at_stop(text, rendered.stop)
    if single_line:
        text, _ = cut_single_line(text)
        rest = rendered.suffix.split("\n", 1)[0]
        if rest.strip() and text.endswith(rest):
            text = text[: -len(rest)]
    return text[:max_chars]


class Executor:
    """Runs jobs on one backend, at most ``backend.capacity`` at once."""

    def __init__(
        self, backend: CompletionBackend, *, max_prompt_tokens: int = 2048, max_chars: int = 4096
    ) -> None:
        self.backend = backend
        self.max_prompt_tokens = max_prompt_tokens
        self.max_chars = max_chars
        self._slots = asyncio.Semaphore(max(1, backend.capacity))

    async def run(self, spec: JobSpec, cancel: threading.Event) -> JobOutput:
        """Run ``spec``; raise ``Cancelled`` if ``cancel`` is set before or while it runs."""
        arrived = time.perf_counter()
        async with self._slots:
            started = time.perf_counter()
            if cancel.is_set():
                raise Cancelled(spec.id)
            backend = self.backend
            rendered = render(
                backend.family, spec.parts, self.max_prompt_tokens, backend.count_tokens
            )
            rendered_at = time.perf_counter()
            prompt = Prompt(rendered, spec.max_tokens, spec.single_line)
            generated = await backend.complete(prompt, cancel)
            done = time.perf_counter()
        if cancel.is_set():
            raise Cancelled(spec.id)
        return JobOutput(
            text=finish(generated.text, rendered, spec.single_line, self.max_chars),
            queue_ms=(started - arrived) * 1000,
            prompt_ms=(rendered_at - started) * 1000,
            model_ms=(done - rendered_at) * 1000,
            tokens=generated.tokens,
            model=backend.name,
        )
