"""Continuous batching with prefix reuse: the transformers backend's generation thread.

Every request is a :class:`Job`. One thread runs the model; at each step it

1. takes new jobs and drops cancelled ones (a running one leaves the batch at once);
2. admits waiting jobs while the batch has room: each starts from the longest prefix of
   token ids it shares with one of its typist's last prompts (:class:`PrefixCache`) and prefills
   only the rest, at most ``prefill_chunk`` tokens a step, so that running rows keep going;
3. runs one decoding step for every row of the batch.

Rows sit left-padded in one KV cache: a prefilled job joins it at the next step, a finished
or cancelled one leaves it at once. Decoding is greedy, so a job's output does not depend on
whether its prefix came from the cache or on who shares its batch.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from .backend import Cancelled, Generated
from .prefix_cache import CachedPrefix, PrefixCache, common_prefix
from .prompts import cut_at_stop, cut_single_line

__all__ = ["Engine", "EngineStats", "Job"]

log = logging.getLogger("collab.completion.engine")

Layers = list[tuple[Any, Any]]  # (keys, values) per layer, [rows, heads, tokens, head_dim]


@dataclass(eq=False)
class Job:
    """One completion. ``finish`` and ``on_text`` are called on the generation thread."""

    ids: list[int]
    max_tokens: int
    single_line: bool
    stop: tuple[str, ...]
    cancel: threading.Event
    finish: Callable[[Generated | BaseException], None]
    key: Hashable | None = None  # the typist, whose cached prefix to reuse
    on_text: Callable[[str], None] | None = None  # the raw text so far, as it grows
    reused: int = 0  # prompt tokens taken from the cache
    filled: int = 0  # prompt tokens in ``kv`` so far
    kv: Layers | None = None  # its own cache while it prefills
    length: int = 0  # tokens in its row of the batch
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    steps: int = 0
    next_token: int = -1  # chosen, not yet fed to the model


@dataclass
class EngineStats:
    requests: int = 0
    prompt_tokens: int = 0
    reused_tokens: int = 0
    steps: int = 0  # decoding steps
    rows: collections.deque[int] = field(default_factory=lambda: collections.deque(maxlen=4096))
    """Rows of each recent decoding step."""

    @property
    def prefill_tokens(self) -> int:
        return self.prompt_tokens - self.reused_tokens


_SPARE = 64  # tokens of room a batch's cache keeps at its end


def _roomy_layer(base: Any) -> Any:
    """A ``DynamicLayer`` (``base``) with room at its end: a decoding step writes its token's
    keys and values in place, where ``DynamicLayer`` copies the whole cache (``torch.cat``;
    that copy was 40% of a step at 8 rows of 1,350 tokens on the CPU)."""

    class RoomyLayer(base):  # type: ignore[misc]
        def __init__(self, keys: Any, values: Any) -> None:
            super().__init__()
            self.lazy_initialization(keys, values)
            self.hold(keys, values)

        def hold(self, keys: Any, values: Any, spare: int = _SPARE) -> None:
            """Hold exactly ``keys`` and ``values``, with room for ``spare`` more tokens."""
            size = keys.shape[-2]
            shape = (*keys.shape[:-2], size + spare, keys.shape[-1])
            self._keys, self._values = keys.new_empty(shape), values.new_empty(shape)
            self._keys[..., :size, :] = keys
            self._values[..., :size, :] = values
            self._size = size
            self.keys, self.values = self._keys[..., :size, :], self._values[..., :size, :]

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> Any:
            count = key_states.shape[-2]
            if self._size + count > self._keys.shape[-2]:
                self.hold(self.keys, self.values, max(count, self._size // 2, _SPARE))
            end = self._size + count
            self._keys[..., self._size : end, :] = key_states
            self._values[..., self._size : end, :] = value_states
            self._size = end
            self.keys, self.values = self._keys[..., :end, :], self._values[..., :end, :]
            return self.keys, self.values

    return RoomyLayer


class Engine:
    """Runs jobs on ``model`` (a ``transformers`` causal LM) from one thread: :meth:`run`."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        stop_ids: set[int],
        max_batch: int,
        prefill_chunk: int,
        cache: PrefixCache,
        ignore_eos: bool = False,
    ) -> None:
        import torch
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        self._torch: Any = torch
        self._dynamic: Any = DynamicCache
        self._roomy: Any = _roomy_layer(DynamicLayer)
        self.model = model
        self.tokenizer = tokenizer
        self.device = model.device
        self.stop_ids = set() if ignore_eos else set(stop_ids)
        self.max_batch = max(1, max_batch)
        self.prefill_chunk = max(1, prefill_chunk)
        self.cache = cache
        self.ignore_eos = ignore_eos
        self.stats = EngineStats()
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._waiting: collections.deque[Job] = collections.deque()
        self._filling: list[Job] = []
        self._rows: list[Job | None] = []  # None: a free slot of the batch
        self._batch: Any = None  # a DynamicCache holding every row
        self._mask: Any = None  # [rows, tokens]: which cached positions are real

    def submit(self, job: Job) -> None:
        """Queue ``job`` (from any thread)."""
        self._queue.put(job)

    def stop(self) -> None:
        """Make :meth:`run` return; jobs not finished by then fail with ``Cancelled``."""
        self._queue.put(None)

    def run(self) -> None:
        try:
            while self._take():
                try:
                    self._step()
                except Exception as exc:  # the jobs in the model fail; the thread goes on
                    log.exception("generation failed")
                    self._fail_running(exc)
        finally:
            self._fail_running(Cancelled())
            while self._waiting:
                self._waiting.popleft().finish(Cancelled())
            while True:  # asked for after the stop: never run
                try:
                    left = self._queue.get_nowait()
                except queue.Empty:
                    break
                if left is not None:
                    left.finish(Cancelled())

    # -- one step ----------------------------------------------------------------------------

    def _take(self) -> bool:
        """Move queued jobs to the waiting line (block while there is nothing to do);
        ``False`` once stopped."""
        idle = not (self._waiting or self._filling or self._live())
        try:
            item = self._queue.get(block=idle)
            while True:
                if item is None:
                    return False
                self._waiting.append(item)
                item = self._queue.get_nowait()
        except queue.Empty:
            return True

    def _step(self) -> None:
        self._drop_cancelled()
        while self._waiting and len(self._filling) + len(self._live()) < self.max_batch:
            self._start(self._waiting.popleft())
        if self._filling:
            self._prefill()
        if self._live():
            self._decode()

    def _live(self) -> list[Job]:
        return [job for job in self._rows if job is not None]

    def _drop_cancelled(self) -> None:
        for job in [j for j in self._waiting if j.cancel.is_set()]:
            self._waiting.remove(job)
            job.finish(Cancelled())
        for job in [j for j in self._filling if j.cancel.is_set()]:
            self._filling.remove(job)
            self._remember(job)  # what it prefilled serves its successor
            job.finish(Cancelled())
        gone = [i for i, job in enumerate(self._rows) if job is not None and job.cancel.is_set()]
        if gone:
            for i in gone:
                row = self._rows[i]
                assert row is not None
                row.finish(Cancelled())
            self._leave(gone)

    def _start(self, job: Job) -> None:
        """Begin ``job`` from the longest prefix its typist's cache shares with it."""
        if not job.ids:
            job.finish(Generated("", 0))
            return
        self.stats.requests += 1
        self.stats.prompt_tokens += len(job.ids)
        entry = self.cache.get(job.key, job.ids) if job.key is not None else None
        if entry is not None:
            # at least one token is prefilled: its logits choose the first new token
            shared = min(common_prefix(entry.ids, job.ids), len(job.ids) - 1)
            if shared > 0:
                job.kv = [(k[:, :, :shared], v[:, :, :shared]) for k, v in entry.layers]
                job.reused = job.filled = shared
                self.stats.reused_tokens += shared
        self._filling.append(job)

    def _prefill(self) -> None:
        """Prefill up to ``prefill_chunk`` prompt tokens; a job whose prompt is complete
        chooses its first token and joins the batch.

        Jobs with at most a quarter of a chunk left (a typist's next keystroke, whose cache
        holds the rest) go first, then the others oldest first: a keystroke's few tokens do
        not wait behind a whole cold prompt, and the cold one still moves on, since the jobs
        in flight are bounded by the batch and each short one is done in this step."""
        budget = self.prefill_chunk
        short = max(1, self.prefill_chunk // 4)
        for job in sorted(self._filling, key=lambda job: len(job.ids) - job.filled > short):
            if budget <= 0:
                break
            count = min(len(job.ids) - job.filled, budget)
            budget -= count
            logits = self._forward_prompt(job, count)
            if job.filled < len(job.ids):
                continue
            self._filling.remove(job)
            self._remember(job)
            job.length = job.filled
            if self._accept(job, int(logits.argmax())):
                try:
                    self._join(job)
                except BaseException as exc:  # in neither list: fail it here
                    job.finish(exc)
                    raise

    def _forward_prompt(self, job: Job, count: int) -> Any:
        torch = self._torch
        start = job.filled
        ids = torch.tensor([job.ids[start : start + count]], device=self.device)
        positions = torch.arange(start, start + count, device=self.device).unsqueeze(0)
        cache = self._dynamic(ddp_cache_data=job.kv) if job.kv else self._dynamic()
        with torch.inference_mode():
            out = self.model(
                input_ids=ids,
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
        job.kv = [(layer.keys, layer.values) for layer in cache.layers]
        job.filled += count
        return out.logits[0, -1]

    def _remember(self, job: Job) -> None:
        """Keep ``job``'s prefilled prompt for its typist's next request."""
        if job.key is None or not job.kv or job.filled <= job.reused:
            return  # nothing new: the cache already holds (a longer version of) it
        layers = tuple((k, v) for k, v in job.kv)
        size = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in layers)
        self.cache.put(job.key, CachedPrefix(tuple(job.ids[: job.filled]), layers, size))

    def _decode(self) -> None:
        """One token for every row; a free slot runs a placeholder that attends only to
        itself, and its output is ignored."""
        torch, rows = self._torch, self._rows
        tokens = torch.tensor(
            [[0 if job is None else job.next_token] for job in rows], device=self.device
        )
        positions = torch.tensor(
            [[0 if job is None else job.length] for job in rows], device=self.device
        )
        mask = torch.cat([self._mask, self._mask.new_ones(len(rows), 1)], dim=1)
        with torch.inference_mode():
            out = self.model(
                input_ids=tokens,
                attention_mask=mask,
                position_ids=positions,
                past_key_values=self._batch,
                use_cache=True,
                logits_to_keep=1,
            )
        self._mask = mask
        self.stats.steps += 1
        self.stats.rows.append(len(self._live()))
        chosen = out.logits[:, -1].argmax(-1).tolist()
        ended = []
        for i, (job, token) in enumerate(zip(rows, chosen, strict=True)):
            if job is None:
                mask[i] = False  # its placeholder is forgotten at once
                continue
            job.length += 1
            if job.cancel.is_set():
                job.finish(Cancelled())
                ended.append(i)
            elif not self._accept(job, int(token)):
                ended.append(i)
        if ended:
            self._leave(ended)

    # -- a job's text ------------------------------------------------------------------------

    def _accept(self, job: Job, token: int) -> bool:
        """Take ``token`` as ``job``'s next; ``False`` when that finished the job."""
        job.steps += 1
        if token in self.stop_ids:
            self._done(job)
            return False
        job.tokens.append(token)
        text = self.tokenizer.decode(job.tokens, skip_special_tokens=False)
        if not text.endswith("\ufffd"):  # else a character is split between tokens: wait
            if text != job.text:
                job.text = text
                if job.on_text is not None:
                    job.on_text(text)
            if (job.single_line and cut_single_line(text)[1]) or (
                not self.ignore_eos and cut_at_stop(text, job.stop)[1]
            ):
                self._done(job)
                return False
        if job.steps >= job.max_tokens:
            self._done(job)
            return False
        job.next_token = token
        return True

    def _done(self, job: Job) -> None:
        text = self.tokenizer.decode(job.tokens, skip_special_tokens=False)
        if not self.ignore_eos:
            text = cut_at_stop(text, job.stop)[0]
        if job.single_line:
            text = cut_single_line(text)[0]
        job.finish(Generated(text, job.steps, len(job.ids), job.reused))

    # -- the batch ---------------------------------------------------------------------------

    def _join(self, job: Job) -> None:
        """Add ``job``'s prefilled cache to the batch as a left-padded row: in a free slot
        where there is one (written in place; the other rows are not copied), else as a
        new row; the batch is widened on the left (a copy) only for a longer row."""
        torch, kv = self._torch, job.kv
        assert kv is not None
        job.kv = None
        if self._batch is None:
            self._batch = self._dynamic()
            self._batch.layers = [self._roomy(k, v) for k, v in kv]
            self._mask = torch.ones(1, job.length, dtype=torch.bool, device=self.device)
            self._rows = [job]
            return
        width = self._mask.shape[1]
        if job.length > width:
            self._pad_batch(job.length - width)
            width = job.length
        pad = width - job.length
        free = next((i for i, row in enumerate(self._rows) if row is None), None)
        if free is not None:
            with torch.inference_mode():  # (the batch grows in decoding steps: inference tensors)
                for layer, (k, v) in zip(self._batch.layers, kv, strict=True):
                    layer.keys[free, :, pad:] = k[0]
                    layer.values[free, :, pad:] = v[0]
                self._mask[free] = False
                self._mask[free, pad:] = True
            self._rows[free] = job
            return
        pad_kv = torch.nn.functional.pad
        for layer, (k, v) in zip(self._batch.layers, kv, strict=True):
            layer.hold(
                torch.cat([layer.keys, pad_kv(k, (0, 0, pad, 0))]),
                torch.cat([layer.values, pad_kv(v, (0, 0, pad, 0))]),
            )
        row = torch.ones(1, width, dtype=torch.bool, device=self.device)
        row[:, :pad] = False
        self._mask = torch.cat([self._mask, row])
        self._rows.append(job)

    def _pad_batch(self, count: int) -> None:
        pad = self._torch.nn.functional.pad
        for layer in self._batch.layers:
            layer.hold(pad(layer.keys, (0, 0, count, 0)), pad(layer.values, (0, 0, count, 0)))
        self._mask = pad(self._mask, (count, 0), value=False)

    def _leave(self, indices: list[int]) -> None:
        """Free rows ``indices`` (already finished). Their slots wait for the next rows to
        join; the batch is copied without them (and without the padding no row needs) only
        once more than half of it is free or padding: a copy of every row for each finished
        one was a third of the generation thread's time at 8 typists on the CPU."""
        for i in indices:
            self._rows[i] = None
        live = [i for i, job in enumerate(self._rows) if job is not None]
        if not live:
            self._rows, self._batch, self._mask = [], None, None
            return
        width = self._mask.shape[1]
        trim = width - max(job.length for job in self._live())
        if 2 * len(live) >= len(self._rows) and 2 * trim <= width:
            return
        index = self._torch.tensor(live, device=self.device)
        for layer in self._batch.layers:
            layer.hold(
                layer.keys.index_select(0, index)[:, :, trim:],
                layer.values.index_select(0, index)[:, :, trim:],
            )
        self._mask = self._mask.index_select(0, index)[:, trim:]
        self._rows = [self._rows[i] for i in live]

    def _fail_running(self, exc: BaseException) -> None:
        for job in [*self._filling, *self._live()]:
            job.finish(exc)
        self._filling, self._rows = [], []
        self._batch = self._mask = None
