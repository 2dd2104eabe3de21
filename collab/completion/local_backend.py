"""A small completion model that needs no download: n-grams of the repository's own code.

It learns, for each request, from the files the prompt carries (the document around the
cursor and the other files of the branch) and continues the text with the most frequent
next token, backing off from long contexts to short ones. It completes the word under the
cursor, closes brackets the way the code around it does, and repeats familiar idioms.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import threading
from collections import Counter, OrderedDict

from .backend import Cancelled, Generated, Prompt
from .prompts import Family, approx_tokens, cut_single_line

__all__ = ["LocalBackend", "NgramModel", "tokenize"]

_TOKEN = re.compile(r"\n|[ \t]+|\w+|[^\w\s]")
_ORDER = 4  # tokens of context at most
_Table = dict[tuple[str, ...], Counter[str]]


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text)


class NgramModel:
    """Counts of next tokens after every context of 1 to ``_ORDER`` tokens."""

    def __init__(self) -> None:
        self.table: _Table = {}
        self.words: Counter[str] = Counter()

    def learn(self, tokens: list[str], weight: int = 1) -> None:
        table = self.table
        for i in range(1, len(tokens)):
            nxt = tokens[i]
            for n in range(1, min(_ORDER, i) + 1):
                key = tuple(tokens[i - n : i])
                counts = table.get(key)
                if counts is None:
                    counts = table[key] = Counter()
                counts[nxt] += weight
        self.words.update(t for t in tokens if _is_word(t))


class _Mixture:
    """Several models queried as one (the counts add up)."""

    def __init__(self, models: list[NgramModel]) -> None:
        self.models = models

    def _counts(self, key: tuple[str, ...]) -> Counter[str]:
        total: Counter[str] = Counter()
        for model in self.models:
            counts = model.table.get(key)
            if counts:
                total.update(counts)
        return total

    def predict(self, history: list[str]) -> str | None:
        """The likeliest next token after ``history`` (the longest known context wins)."""
        for n in range(min(_ORDER, len(history)), 0, -1):
            counts = self._counts(tuple(history[-n:]))
            if counts:
                return max(counts.items(), key=lambda item: item[1])[0]
        return None

    def complete_word(self, history: list[str], partial: str) -> str | None:
        """A longer word that starts with ``partial``, the one seen most after ``history``."""
        for n in range(min(_ORDER, len(history)), 0, -1):
            counts = self._counts(tuple(history[-n:]))
            best = _longer(counts, partial)
            if best is not None:
                return best
        words: Counter[str] = Counter()
        for model in self.models:
            words.update(model.words)
        return _longer(words, partial)


def _longer(counts: Counter[str], partial: str) -> str | None:
    options = [(c, w) for w, c in counts.items() if w.startswith(partial) and w != partial]
    return max(options)[1] if options else None


class LocalBackend:
    """The default backend: runs anywhere, offline, in a few milliseconds."""

    def __init__(self, *, capacity: int = 4, cache_files: int = 256) -> None:
        self._capacity = capacity
        self._models: OrderedDict[bytes, NgramModel] = OrderedDict()
        self._cache_files = cache_files
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return "local-ngram"

    @property
    def family(self) -> Family:
        return Family.PLAIN

    @property
    def capacity(self) -> int:
        return self._capacity

    def count_tokens(self, text: str) -> int:
        return approx_tokens(text)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def complete(self, prompt: Prompt, cancel: threading.Event) -> Generated:
        if cancel.is_set():
            raise Cancelled()
        return await asyncio.to_thread(self._generate, prompt, cancel)

    def _file_model(self, text: str) -> NgramModel:
        key = hashlib.blake2b(text.encode(), digest_size=16).digest()
        with self._lock:
            model = self._models.get(key)
            if model is not None:
                self._models.move_to_end(key)
                return model
        model = NgramModel()
        model.learn(tokenize(text))
        with self._lock:
            self._models[key] = model
            while len(self._models) > self._cache_files:
                self._models.popitem(last=False)
        return model

    def _generate(self, prompt: Prompt, cancel: threading.Event) -> Generated:
        rendered = prompt.rendered
        history = tokenize(rendered.prefix)
        local = NgramModel()
        local.learn(history, weight=2)  # the file being edited counts more
        local.learn(tokenize(rendered.suffix), weight=2)
        model = _Mixture([local, *(self._file_model(item.text) for item in rendered.context)])
        out: list[str] = []
        if history and _is_word(history[-1]):
            rest = model.complete_word(history[:-1], history[-1])
            if rest is not None:
                out.append(rest[len(history[-1]) :])
                history[-1] = rest
        for _ in range(prompt.max_tokens - len(out)):
            if cancel.is_set():
                raise Cancelled()
            token = model.predict(history)
            if token is None:
                break
            out.append(token)
            history.append(token)
            if prompt.single_line and cut_single_line("".join(out))[1]:
                break
        text = "".join(out)
        return Generated(cut_single_line(text)[0] if prompt.single_line else text, len(out))


def _is_word(token: str) -> bool:
    return bool(token) and (token[0].isalnum() or token[0] == "_")
