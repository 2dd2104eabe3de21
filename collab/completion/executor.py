"""Running one completion job on a backend: render the prompt, generate, clean the text up.

The same code runs in the engine's embedded worker and in remote ``collab worker`` processes.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .backend import (
    Cancelled,
    CompletionBackend,
    Generated,
    Prompt,
    StreamingBackend,
    valid_text,
)
from .excerpt import Starts
from .prompts import (
    LineEnd,
    PromptParts,
    Rendered,
    StopScan,
    cut_at_stop,
    cut_single_line,
    render,
)

__all__ = ["Executor", "JobOutput", "JobSpec", "TextStream", "finish", "settled"]

_MAX_TYPISTS = 4096  # typists whose prefix starts an executor remembers


@dataclass(frozen=True, slots=True)
class JobSpec:
    """A job as a worker receives it."""

    id: str
    parts: PromptParts
    max_tokens: int
    single_line: bool
    cache_key: str | None = None  # the typist (connection and document), for prompt caches
    stream: bool = False  # send the text while it is generated


_LONGEST_MS = 3_600_000.0  # an hour: no completion's figure is longer
_MOST_TOKENS = 1_000_000_000  # no prompt or completion has more tokens


@dataclass(frozen=True, slots=True)
class JobOutput:
    """A finished job; times in milliseconds, measured in the worker."""

    text: str
    queue_ms: float  # waiting in the worker for a free slot
    prompt_ms: float  # rendering and trimming the prompt
    model_ms: float  # generating
    tokens: int
    model: str
    prompt_tokens: int = 0  # the prompt's tokens, where the backend counts them
    reused_tokens: int = 0  # of those, how many a cache held (not prefilled again)

    def __post_init__(self) -> None:
        """Figures a worker or a model server reported are taken within reason: a time
        that is not a number or negative as 0, one longer than an hour as an hour; a count
        below 0 as 0, over a billion as a billion, and no more reused tokens than the
        prompt's (where it is counted). The text is made one UTF-8 can carry
        (:func:`valid_text`). (One NaN made the completion figures unreadable as JSON, a
        negative count made a counter go down, a count of 10**20 could not be sent, nor
        could a lone surrogate.)"""
        object.__setattr__(self, "text", valid_text(self.text))
        object.__setattr__(self, "model", valid_text(self.model))
        for name in ("queue_ms", "prompt_ms", "model_ms"):
            value = float(getattr(self, name))
            value = min(value, _LONGEST_MS) if value > 0 else 0.0  # (NaN > 0 is false)
            object.__setattr__(self, name, value)
        for name in ("tokens", "prompt_tokens", "reused_tokens"):
            count = int(getattr(self, name))
            object.__setattr__(self, name, min(max(0, count), _MOST_TOKENS))
        if self.prompt_tokens:
            object.__setattr__(self, "reused_tokens", min(self.reused_tokens, self.prompt_tokens))


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


def _held(text: str, markers: Sequence[str]) -> int:
    """How many characters at the end of ``text`` may begin one of ``markers``."""
    longest = 0
    for marker in markers:
        for size in range(min(len(marker), len(text)), longest, -1):
            if text.endswith(marker[:size]):
                longest = size
                break
    return longest


def settled(raw: str, rendered: Rendered, single_line: bool, max_chars: int) -> str:
    """What the completion is sure to begin with, ``raw`` being the text generated so far:
    :func:`finish`'s result once it has ended, else ``raw`` less what may yet prove to be a
    stop string or (single-line) the rest of the cursor's line that ``finish`` would drop."""
    text, ended = cut_at_stop(raw, rendered.stop)
    if single_line:
        text, line_ended = cut_single_line(text)
        ended = ended or line_ended
    if ended:
        return finish(raw, rendered, single_line, max_chars)
    markers = list(rendered.stop)
    rest = rendered.suffix.split("\n", 1)[0]
    if single_line and rest.strip():
        markers.append(rest)
    return text[: len(text) - _held(text, markers)][:max_chars]


class TextStream:
    """Hands ``emit`` the new part of the settled text each time a backend's text grows;
    the pieces put together are always the beginning of the finished completion.

    ``update`` gets the whole text so far each time, and costs about what is new in it
    (stop strings and the line end are looked for incrementally; nothing is copied but the
    piece sent), so that a backend sending many small pieces stays linear. Once the text
    has ended (a stop string, the end of a single line, ``max_chars``), ``done`` is set
    and later updates are ignored."""

    def __init__(
        self, rendered: Rendered, single_line: bool, max_chars: int, emit: Callable[[str], None]
    ) -> None:
        self.rendered = rendered
        self.single_line = single_line
        self.max_chars = max_chars
        self.emit = emit
        self.done = False
        self._pieces: list[str] = []
        self._length = 0
        self._stops = StopScan(rendered.stop)
        self._line = LineEnd()
        self._markers = list(rendered.stop)
        rest = rendered.suffix.split("\n", 1)[0]
        if single_line and rest.strip():
            self._markers.append(rest)
        self._window = max((len(marker) for marker in self._markers), default=0)

    @property
    def sent(self) -> str:
        """The text sent so far."""
        if len(self._pieces) > 1:
            self._pieces = ["".join(self._pieces)]
        return self._pieces[0] if self._pieces else ""

    def update(self, raw: str) -> bool:
        """``raw``: the text generated so far (the last ``raw`` and more); whether the text
        has ended (the backend may stop: a ``TextSink``)."""
        if self.done:
            return True
        ended = self._stops.scan(raw) is not None
        if not ended and self.single_line:
            ended = self._line.scan(raw) is not None
        if ended:
            self.send(finish(raw, self.rendered, self.single_line, self.max_chars))
            self.done = True
            return True
        tail = raw[-self._window :] if self._window else ""  # what a marker may begin in
        settled_length = min(len(raw) - _held(tail, self._markers), self.max_chars)
        if settled_length > self._length:
            self._add(raw[self._length : settled_length])
        if self._length >= self.max_chars:
            self.done = True
        return self.done

    def send(self, text: str) -> None:
        """Send what ``text`` (the settled or finished text) has past what was sent."""
        if len(text) > self._length and text.startswith(self.sent):
            self._add(text[self._length :])

    def _add(self, piece: str) -> None:
        self._pieces.append(piece)
        self._length += len(piece)
        self.emit(piece)


class Executor:
    """Runs jobs on one backend, at most ``backend.capacity`` at once."""

    def __init__(
        self, backend: CompletionBackend, *, max_prompt_tokens: int = 2048, max_chars: int = 4096
    ) -> None:
        self.backend = backend
        self.max_prompt_tokens = max_prompt_tokens
        self.max_chars = max_chars
        self._slots = asyncio.Semaphore(max(1, backend.capacity))
        self._starts = Starts(max_keys=_MAX_TYPISTS)
        """Where each typist's prefixes started, in each part of the file: kept while they
        fit, for prompt caches."""

    async def run(
        self,
        spec: JobSpec,
        cancel: threading.Event,
        emit: Callable[[str], None] | None = None,
    ) -> JobOutput:
        """Run ``spec``; raise ``Cancelled`` if ``cancel`` is set before or while it runs.

        ``emit``, when given, receives the completion in pieces as it is generated (all of
        it at the end from a backend that does not stream); together they are its text."""
        arrived = time.perf_counter()
        async with self._slots:
            started = time.perf_counter()
            if cancel.is_set():
                raise Cancelled(spec.id)
            backend = self.backend
            key = spec.cache_key
            rendered = render(
                backend.family,
                spec.parts,
                self.max_prompt_tokens,
                backend.count_tokens,
                single_line=spec.single_line,
                starts=self._starts,
                key=key,
            )
            rendered_at = time.perf_counter()
            prompt = Prompt(rendered, spec.max_tokens, spec.single_line, spec.cache_key)
            stream = None
            if emit is not None:
                stream = TextStream(rendered, spec.single_line, self.max_chars, emit)
            generated = await self._generate(prompt, cancel, stream)
            done = time.perf_counter()
        if cancel.is_set():
            raise Cancelled(spec.id)
        text = finish(generated.text, rendered, spec.single_line, self.max_chars)
        if stream is not None:
            stream.send(text)
        return JobOutput(
            text=text,
            queue_ms=(started - arrived) * 1000,
            prompt_ms=(rendered_at - started) * 1000,
            model_ms=(done - rendered_at) * 1000,
            tokens=generated.tokens,
            model=backend.name,
            prompt_tokens=generated.prompt_tokens,
            reused_tokens=generated.reused_tokens,
        )

    async def _generate(
        self, prompt: Prompt, cancel: threading.Event, stream: TextStream | None
    ) -> Generated:
        backend = self.backend
        if stream is not None and isinstance(backend, StreamingBackend):
            return await backend.complete_streaming(prompt, cancel, stream.update)
        return await backend.complete(prompt, cancel)
