"""The ``CompletionBackend`` seam: a prompt in, a completion out."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from .prompts import Family, Rendered

__all__ = [
    "Cancelled",
    "CompletionBackend",
    "Generated",
    "Prompt",
    "StreamingBackend",
    "TextSink",
    "valid_text",
]

TextSink = Callable[[str], "bool | None"]
"""Called on the event loop with the raw text generated so far, each time it grows; it
answers true once it needs no more (the completion is as long as it may be): a backend
may then stop generating."""


_SURROGATE = re.compile("[\ud800-\udfff]")


def valid_text(text: str) -> str:
    """``text`` as UTF-8 can carry it: two halves of a character (JSON escapes a model
    server sent apart) are joined, and a lone half becomes U+FFFD, as a decoder reads it."""
    if _SURROGATE.search(text) is None:
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


class Cancelled(Exception):
    """The job was cancelled (superseded, timed out, or its requester left) before it ended."""


@dataclass(frozen=True, slots=True)
class Prompt:
    """One completion to generate.

    ``rendered.text`` is the prompt in the backend's family format; backends that model the
    code themselves (the local one) read ``rendered.prefix``/``suffix``/``context`` instead.
    """

    rendered: Rendered
    max_tokens: int
    single_line: bool  # stop at the end of the first non-blank line
    cache_key: str | None = None  # the typist (connection and document): whose cache to reuse

    @property
    def text(self) -> str:
        return self.rendered.text


@dataclass(frozen=True, slots=True)
class Generated:
    text: str
    tokens: int  # tokens generated (for throughput figures)
    prompt_tokens: int = 0  # the prompt's tokens, where the backend knows them
    reused_tokens: int = 0  # of those, how many came from a cache instead of a prefill


@runtime_checkable
class CompletionBackend(Protocol):
    """Generates completions. ``complete`` may be called concurrently, up to ``capacity``
    calls at once (a backend that batches gathers them into one forward pass).

    ``cancel`` is set, possibly from another thread, when the job is no longer wanted: a
    backend checks it before it starts and while it generates, and then raises ``Cancelled``.
    """

    @property
    def name(self) -> str: ...

    @property
    def family(self) -> Family: ...

    @property
    def capacity(self) -> int: ...

    def count_tokens(self, text: str) -> int: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def complete(self, prompt: Prompt, cancel: threading.Event) -> Generated: ...


@runtime_checkable
class StreamingBackend(Protocol):
    """A backend that can also hand out its text while it generates (an optional method:
    the executor uses it when the requester streams, and ``complete`` otherwise)."""

    async def complete_streaming(
        self, prompt: Prompt, cancel: threading.Event, on_text: TextSink
    ) -> Generated: ...
