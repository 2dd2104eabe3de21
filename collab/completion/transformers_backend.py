"""A backend that runs a causal code model with ``transformers``, on CUDA when there is one.

Concurrent requests are batched: one generation thread takes every request waiting when it
is free and runs them as one left-padded batch. A stopping criterion ends each row on its own:
at a stop token or string, at the end of the line in single-line mode, at its token limit, or
as soon as its job is cancelled. On CUDA the model runs in bf16 with a static KV cache, which
lets ``generate`` compile the decoder step with CUDA graphs; prompt lengths and batch sizes are
rounded up to a few shapes so that compiled graphs are reused.

``torch`` and ``transformers`` are optional (``pip install 'collab-engine[ai]'``) and imported
only when this backend starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .backend import Cancelled, Generated, Prompt
from .prompts import (
    Family,
    approx_tokens,
    cut_at_stop,
    cut_single_line,
    detect_family,
    stop_strings,
)

__all__ = ["TransformersBackend"]

log = logging.getLogger("collab.completion.transformers")

_PAD_MULTIPLE = 128  # prompt lengths are padded to a multiple of this on CUDA


def _import(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise RuntimeError(
            f"the transformers backend needs {name}: pip install 'collab-engine[ai]'"
        ) from exc


@dataclass(eq=False)
class _Request:
    prompt: Prompt
    cancel: threading.Event
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Generated]
    text: str = ""  # decoded token by token, to find line ends and stop strings early
    ids: list[int] = field(default_factory=list)
    steps: int = 0
    done: bool = False

    def resolve(self, result: Generated | BaseException) -> None:
        def settle() -> None:
            if self.future.done():
                return
            if isinstance(result, BaseException):
                self.future.set_exception(result)
            else:
                self.future.set_result(result)

        self.loop.call_soon_threadsafe(settle)


@dataclass
class _Stats:
    batches: list[int] = field(default_factory=list)  # sizes of the batches run
    steps: list[int] = field(default_factory=list)  # decoding steps of each batch


class TransformersBackend:
    """A local model directory (``config.json``, weights, tokenizer) run by ``transformers``."""

    def __init__(
        self,
        model: str | Path,
        *,
        device: str | None = None,
        dtype: str | None = None,
        max_batch: int = 8,
        family: Family | None = None,
        compile: bool | None = None,
        ignore_eos: bool = False,
    ) -> None:
        self.path = Path(model)
        self.device = device
        self.dtype = dtype
        self.max_batch = max(1, max_batch)
        self._family = family or _family_from_files(self.path)
        self._explicit_family = family is not None
        self.compile = compile  # None: on CUDA only
        self.ignore_eos = ignore_eos  # generate to the token limit (benchmarks)
        self.stats = _Stats()
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._torch: Any = None
        self._tokenizer: Any = None  # used by the generation thread only
        self._counter: Any = None  # a second instance for the event loop: they are not shareable
        self._model: Any = None
        self._stop_ids: list[int] = []
        self._static = False

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
        """Whether decoding runs with a static cache and a compiled step (CUDA by default)."""
        return self._static

    def count_tokens(self, text: str) -> int:
        if self._counter is None:
            return approx_tokens(text)
        return len(self._counter(text, add_special_tokens=False)["input_ids"])

    async def start(self) -> None:
        await asyncio.to_thread(self._load)
        self._thread = threading.Thread(target=self._loop, name="completion-model", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        while not self._queue.empty():  # asked for after the stop: never run
            left = self._queue.get_nowait()
            if left is not None:
                left.resolve(Cancelled())

    async def complete(self, prompt: Prompt, cancel: threading.Event) -> Generated:
        if self._thread is None:
            raise RuntimeError("backend not started")
        if cancel.is_set():
            raise Cancelled()
        loop = asyncio.get_running_loop()
        request = _Request(prompt, cancel, loop, loop.create_future())
        self._queue.put(request)
        try:
            return await request.future
        except asyncio.CancelledError:
            cancel.set()  # the generation thread drops it at its next step
            raise

    # -- the generation thread -------------------------------------------------------------

    def _load(self) -> None:
        torch = self._torch = _import("torch")
        transformers = _import("transformers")
        transformers.utils.logging.disable_progress_bar()
        if self.device is None:
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        cuda = str(self.device).startswith("cuda")
        if self.dtype is None:
            self.dtype = "bfloat16" if cuda and torch.cuda.is_bf16_supported() else "float32"
        tokenizer = transformers.AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model = transformers.AutoModelForCausalLM.from_pretrained(
            self.path, dtype=getattr(torch, self.dtype), local_files_only=True
        )
        model.to(self.device).eval()
        vocabulary = tokenizer.get_vocab()
        if not self._explicit_family:
            self._family = detect_family(
                model.config.model_type, f"{self.path} {model.config.name_or_path}", vocabulary
            )
        self._stop_ids = sorted(
            {vocabulary[s] for s in stop_strings(self._family) if s in vocabulary}
            | ({tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set())
        )
        if self.ignore_eos:
            self._stop_ids = []
            model.generation_config.eos_token_id = None
        if cuda:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self._static = cuda if self.compile is None else self.compile
        self._counter = transformers.AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        self._tokenizer, self._model = tokenizer, model
        log.info(
            "loaded %s (%s, %s, %s) on %s%s",
            self.path,
            model.config.model_type,
            self._family,
            self.dtype,
            self.device,
            ", static cache + compiled decoding" if self._static else "",
        )

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)
                    break
                batch.append(item)
            live = []
            for request in batch:
                if request.cancel.is_set():
                    request.resolve(Cancelled())  # skipped: never reaches the model
                else:
                    live.append(request)
            if not live:
                continue
            try:
                self._generate(live)
            except BaseException as exc:  # keep the thread alive; each requester gets the error
                log.exception("generation failed")
                for request in live:
                    request.resolve(exc if isinstance(exc, Exception) else RuntimeError(str(exc)))

    def _generate(self, batch: list[_Request]) -> None:
        torch, tokenizer, model = self._torch, self._tokenizer, self._model
        transformers = _import("transformers")
        rows = list(batch)
        if self._static:  # round the batch up to a power of two: fewer shapes to compile
            size = 1 << (len(rows) - 1).bit_length()
            rows += [rows[0]] * (size - len(rows))
        encoded = tokenizer(
            [r.prompt.text for r in rows],
            return_tensors="pt",
            padding=True,
            pad_to_multiple_of=_PAD_MULTIPLE if self._static else None,
        ).to(self.device)
        max_new = max(r.prompt.max_tokens for r in batch)
        criterion = _criterion(transformers, torch, self, rows, len(batch))
        config = transformers.GenerationConfig(
            max_new_tokens=max_new,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=self._stop_ids or None,
            cache_implementation="static" if self._static else None,
        )
        with torch.inference_mode():
            model.generate(
                **encoded,
                generation_config=config,
                stopping_criteria=transformers.StoppingCriteriaList([criterion]),
            )
        self.stats.batches.append(len(batch))
        self.stats.steps.append(criterion.calls)
        for request in batch:
            if request.cancel.is_set():
                request.resolve(Cancelled())
                continue
            text = tokenizer.decode(request.ids, skip_special_tokens=False)
            if not self.ignore_eos:
                text, _ = cut_at_stop(text, request.prompt.rendered.stop)
            if request.prompt.single_line:
                text, _ = cut_single_line(text)
            request.resolve(Generated(text, request.steps))


def _criterion(
    transformers: Any,
    torch: Any,
    backend: TransformersBackend,
    rows: list[_Request],
    live: int,
) -> Any:
    """A ``StoppingCriteria`` that ends each row of the batch on its own."""
    tokenizer = backend._tokenizer
    stop_ids = set(backend._stop_ids)
    ignore_eos = backend.ignore_eos

    class RowStop(transformers.StoppingCriteria):  # type: ignore[misc]
        def __init__(self) -> None:
            self.calls = 0
            self.done = [i >= live for i in range(len(rows))]  # filler rows are done at once

        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            self.calls += 1
            last = input_ids[:, -1].tolist()
            for i, request in enumerate(rows[:live]):
                if self.done[i]:
                    continue
                token = int(last[i])
                request.steps += 1
                if token in stop_ids:
                    self.done[i] = True
                    continue
                request.ids.append(token)
                request.text += tokenizer.decode([token], skip_special_tokens=False)
                prompt = request.prompt
                if (
                    request.cancel.is_set()
                    or request.steps >= prompt.max_tokens
                    or (prompt.single_line and cut_single_line(request.text)[1])
                    or (not ignore_eos and cut_at_stop(request.text, prompt.rendered.stop)[1])
                ):
                    self.done[i] = True
            return torch.tensor(self.done, dtype=torch.bool, device=input_ids.device)

    return RowStop()


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
