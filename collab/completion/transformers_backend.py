"""A backend that runs a causal code model with ``transformers``, on CUDA when there is one.

Requests go to one generation thread (:class:`~collab.completion.engine.Engine`) that
batches them continuously: a request that arrives while others generate joins the running
batch at the next step, and a cancelled one leaves it at once. Each typist's prompt cache
is kept between requests (:class:`~collab.completion.prefix_cache.PrefixCache`, least
recently used out first, within ``cache_mb``), so that a request prefills only the tokens
after the longest prefix it shares with that typist's last prompt. Text streams out as it is
generated (``complete_streaming``); a row ends at a stop token or string, at the end of the
line in single-line mode, at its token limit, or as soon as its job is cancelled. On CUDA the
model runs in bf16.

``torch`` and ``transformers`` are optional (``pip install 'collab-engine[ai]'``) and imported
only when this backend starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import threading
from pathlib import Path
from typing import Any

from .backend import Cancelled, Generated, Prompt, TextSink
from .engine import Engine, EngineStats, Job
from .prefix_cache import PrefixCache
from .prompts import Family, Rendered, approx_tokens, detect_family, stop_strings

__all__ = ["TransformersBackend"]

log = logging.getLogger("collab.completion.transformers")

_CACHE_MB = {"cpu": 512, "cuda": 8192}  # default bound of the typists' prompt caches


def _import(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise RuntimeError(
            f"the transformers backend needs {name}: pip install 'collab-engine[ai]'"
        ) from exc


class TransformersBackend:
    """A local model directory (``config.json``, weights, tokenizer) run by ``transformers``.

    ``max_batch`` rows decode together; ``prefill_chunk`` prompt tokens at most are prefilled
    between two decoding steps; the typists' prompt caches hold at most ``cache_mb`` MiB
    (default 512 on the CPU, 8192 on CUDA; 0 turns reuse off).
    """

    def __init__(
        self,
        model: str | Path,
        *,
        device: str | None = None,
        dtype: str | None = None,
        max_batch: int = 8,
        family: Family | None = None,
        prefill_chunk: int = 512,
        cache_mb: float | None = None,
        ignore_eos: bool = False,
    ) -> None:
        self.path = Path(model)
        self.device = device
        self.dtype = dtype
        self.max_batch = max(1, max_batch)
        self.prefill_chunk = prefill_chunk
        self.cache_mb = cache_mb
        self._family = family or _family_from_files(self.path)
        self._explicit_family = family is not None
        self.ignore_eos = ignore_eos  # generate to the token limit (benchmarks)
        self._engine: Engine | None = None
        self._thread: threading.Thread | None = None
        self._counter: Any = None  # the event loop's tokenizer (the engine has its own)
        self._frame: tuple[list[int], list[int]] | None = None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def family(self) -> Family:
        return self._family

    @property
    def capacity(self) -> int:
        return self.max_batch

    @property
    def compiled(self) -> bool:
        """Whether decoding runs a compiled step: never (the batch changes every step)."""
        return False

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise RuntimeError("backend not started")
        return self._engine

    @property
    def stats(self) -> EngineStats:
        return self.engine.stats

    @property
    def cache(self) -> PrefixCache:
        return self.engine.cache

    def count_tokens(self, text: str) -> int:
        """The tokens of document text (what looks like a special token in it is text)."""
        if self._counter is None:
            return approx_tokens(text)
        return len(self._text_ids(text))

    def _text_ids(self, text: str) -> list[int]:
        ids = self._counter(text, add_special_tokens=False, split_special_tokens=True)
        return list(ids["input_ids"])

    def tokenize(self, prompt: Rendered | str) -> list[int]:
        """The token ids the engine runs for a rendered prompt: its template's special
        tokens as such, and the documents' text as text, even where it spells a special
        token (a file may well contain ``<|endoftext|>``). A plain string is taken as a
        template, special tokens parsed wherever they appear."""
        if self._counter is None:
            raise RuntimeError("backend not started")
        if isinstance(prompt, str) or not prompt.segments:
            text = prompt if isinstance(prompt, str) else prompt.text
            return list(self._counter(text)["input_ids"])
        head, tail = self._framing()
        ids = list(head)
        for piece, special in prompt.segments:
            if special:
                token = self._counter.convert_tokens_to_ids(piece)
                if token is None or token == self._counter.unk_token_id:
                    ids.extend(self._counter(piece, add_special_tokens=False)["input_ids"])
                else:
                    ids.append(token)
            else:
                ids.extend(self._text_ids(piece))
        return ids + tail

    def _framing(self) -> tuple[list[int], list[int]]:
        """The ids the tokenizer puts before and after a text's (a BOS token, say)."""
        if self._frame is None:
            bare = list(self._counter("x", add_special_tokens=False)["input_ids"])
            full = list(self._counter("x")["input_ids"])
            for at in range(len(full) - len(bare) + 1):
                if full[at : at + len(bare)] == bare:
                    self._frame = (full[:at], full[at + len(bare) :])
                    break
            else:
                self._frame = ([], [])
        return self._frame

    async def start(self) -> None:
        self._engine = await asyncio.to_thread(self._load)
        self._thread = threading.Thread(
            target=self._engine.run, name="completion-model", daemon=True
        )
        self._thread.start()

    async def stop(self) -> None:
        if self._thread is not None and self._engine is not None:
            self._engine.stop()
            await asyncio.to_thread(self._thread.join)
            self._thread = None

    async def complete(self, prompt: Prompt, cancel: threading.Event) -> Generated:
        return await self._run(prompt, cancel, None)

    async def complete_streaming(
        self, prompt: Prompt, cancel: threading.Event, on_text: TextSink
    ) -> Generated:
        return await self._run(prompt, cancel, on_text)

    async def _run(
        self, prompt: Prompt, cancel: threading.Event, on_text: TextSink | None
    ) -> Generated:
        if self._thread is None or self._engine is None:
            raise RuntimeError("backend not started")
        if cancel.is_set():
            raise Cancelled()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Generated] = loop.create_future()

        def settle(result: Generated | BaseException) -> None:
            if future.done():
                return
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

        def finish(result: Generated | BaseException) -> None:
            loop.call_soon_threadsafe(settle, result)

        def stream(text: str) -> None:
            if on_text is not None and not future.done():
                on_text(text)

        def handoff(text: str) -> None:
            loop.call_soon_threadsafe(stream, text)

        job = Job(
            ids=self.tokenize(prompt.rendered),
            max_tokens=prompt.max_tokens,
            single_line=prompt.single_line,
            stop=prompt.rendered.stop,
            cancel=cancel,
            finish=finish,
            key=prompt.cache_key,
            on_text=None if on_text is None else handoff,
        )
        self._engine.submit(job)
        try:
            return await future
        except asyncio.CancelledError:
            cancel.set()  # the generation thread drops it at its next step
            raise

    def _load(self) -> Engine:
        torch = _import("torch")
        transformers = _import("transformers")
        transformers.utils.logging.disable_progress_bar()
        if self.device is None:
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        cuda = str(self.device).startswith("cuda")
        if self.dtype is None:
            self.dtype = "bfloat16" if cuda and torch.cuda.is_bf16_supported() else "float32"
        tokenizer = transformers.AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            self.path, dtype=getattr(torch, self.dtype), local_files_only=True
        )
        model.to(self.device).eval()
        vocabulary = tokenizer.get_vocab()
        if not self._explicit_family:
            self._family = detect_family(
                model.config.model_type, f"{self.path} {model.config.name_or_path}", vocabulary
            )
        stop_ids = {vocabulary[s] for s in stop_strings(self._family) if s in vocabulary}
        if tokenizer.eos_token_id is not None:
            stop_ids.add(tokenizer.eos_token_id)
        if cuda:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        megabytes = self.cache_mb
        if megabytes is None:
            megabytes = _CACHE_MB["cuda" if cuda else "cpu"]
        self._counter = transformers.AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        log.info(
            "loaded %s (%s, %s, %s) on %s, batches of %d, prompt caches of %g MiB",
            self.path,
            model.config.model_type,
            self._family,
            self.dtype,
            self.device,
            self.max_batch,
            megabytes,
        )
        return Engine(
            model,
            tokenizer,
            stop_ids=stop_ids,
            max_batch=self.max_batch,
            prefill_chunk=self.prefill_chunk,
            cache=PrefixCache(int(megabytes * 1024 * 1024)),
            ignore_eos=self.ignore_eos,
        )


def _family_from_files(path: Path) -> Family:
    """The family from ``config.json`` and the tokenizer's files, before anything loads."""
    model_type = None
    vocabulary: set[str] = set()
    with contextlib.suppress(OSError, ValueError, AttributeError):
        model_type = json.loads((path / "config.json").read_text()).get("model_type")
    with contextlib.suppress(OSError, ValueError, AttributeError):
        tokenizer = json.loads((path / "tokenizer.json").read_text())
        vocabulary = {str(t.get("content")) for t in tokenizer.get("added_tokens", [])}
    return detect_family(model_type, str(path), vocabulary)
