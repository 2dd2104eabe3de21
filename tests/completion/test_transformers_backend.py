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
from collab.completion.context import window
from collab.completion.excerpt import Starts
from collab.completion.executor import Executor, JobSpec
from collab.completion.prefix_cache import common_prefix
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
    assert backend.count_tokens(text) < len(text)
    # document text is text, even where it spells a special token
    assert backend.count_tokens("<|fim_prefix|>") > 1


async def test_document_text_never_becomes_special_tokens(backend: TransformersBackend) -> None:
    vocabulary = backend._counter.get_vocab()
    names = ("<|repo_name|>", "<|file_sep|>", "<|fim_prefix|>", "<|fim_suffix|>")
    specials = {vocabulary[t]: t for t in (*names, "<|fim_middle|>", "<|endoftext|>")}
    prefix = 'MARK = "<|fim_middle|>"\nEND = "<|endoftext|>"\nx = '
    parts = PromptParts("demo", "src/tokens.py", prefix, "\n# <|fim_prefix|>\n")
    rendered = render(Family.QWEN_CODER, parts)
    seen = [specials[i] for i in backend.tokenize(rendered) if i in specials]
    assert seen == [*names, "<|fim_middle|>"]
    # a prompt whose documents spell no special token: the same ids as the whole text's
    plain = render(Family.QWEN_CODER, CALC)
    assert backend.tokenize(plain) == backend.tokenize(plain.text)
    # and the engine runs these ids
    answer = await backend.complete(Prompt(rendered, 4, True), threading.Event())
    assert answer.prompt_tokens == len(backend.tokenize(rendered))


async def test_fim_completion_single_line_and_block(backend: TransformersBackend) -> None:
    line = await backend.complete(prompt(CALC), threading.Event())
    assert line.text == "a + b"  # stopped at the end of the line
    block = await backend.complete(prompt(CALC, single_line=False), threading.Event())
    assert block.text == "a + b\n\nprint(add(1, 2))\n"  # stopped at <|endoftext|>
    assert line.tokens < block.tokens < 32  # generation really stopped
    assert line.prompt_tokens == len(backend.tokenize(prompt(CALC).text))


async def test_a_request_that_extends_the_last_prefills_only_its_new_tokens(
    backend: TransformersBackend, model_dir: Path
) -> None:
    """The typist's second prompt shares all but its end with the first: only the tokens
    after the longest shared prefix are prefilled, and the answer is a cold run's."""
    typing = PromptParts(CALC.repo, CALC.path, CALC.prefix[:-4], CALC.suffix)  # "...  re"
    first, second = prompt(typing, single_line=False), prompt(CALC, single_line=False)
    await backend.complete(keyed(first, "alice"), threading.Event())
    ids_first, ids_second = backend.tokenize(first.text), backend.tokenize(second.text)
    shared = common_prefix(ids_first, ids_second)
    assert 0 < shared < len(ids_second)
    before = backend.stats.prefill_tokens
    warm = await backend.complete(keyed(second, "alice"), threading.Event())
    prefilled = backend.stats.prefill_tokens - before
    assert prefilled == len(ids_second) - shared  # only what follows the shared prefix
    assert (warm.prompt_tokens, warm.reused_tokens) == (len(ids_second), shared)
    assert prefilled < len(ids_second) // 3
    cold_backend = TransformersBackend(model_dir, cache_mb=0)  # nothing is ever reused
    await cold_backend.start()
    try:
        cold = await cold_backend.complete(keyed(second, "alice"), threading.Event())
    finally:
        await cold_backend.stop()
    assert cold.reused_tokens == 0
    assert warm.text == cold.text == "a + b\n\nprint(add(1, 2))\n"
    other = await backend.complete(keyed(second, "bob"), threading.Event())  # bob: cold
    assert other.reused_tokens == 0 and other.text == warm.text


class WatchedFlag(threading.Event):
    """A cancel flag that raises itself at its ``raise_at``-th look by the generation thread
    (the engine looks at every flag once per step). Progress is known without a clock."""

    def __init__(self, *, raise_at: int = 0) -> None:
        super().__init__()
        self.looks = 0
        self.raise_at = raise_at

    def is_set(self) -> bool:
        self.looks += 1
        if self.looks == self.raise_at:
            self.set()
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


async def test_a_request_arriving_mid_generation_joins_the_running_batch(
    endless: TransformersBackend,
) -> None:
    backend = endless  # the long job runs to its limit and keeps the model busy
    streaming = asyncio.Event()
    cancel = threading.Event()
    long = asyncio.create_task(
        backend.complete_streaming(
            prompt(HELLO, single_line=False, max_tokens=1000), cancel, lambda _: streaming.set()
        )
    )
    await asyncio.wait_for(streaming.wait(), 30)  # it is generating
    answers = await asyncio.gather(
        *(backend.complete(prompt(p), threading.Event()) for p in (CALC, IMPORTS))
    )
    assert [a.text for a in answers] == ["a + b", "sys"]  # each ends at its line end
    assert not long.done()  # answered while the long job still runs, in one batch with it
    assert max(backend.stats.rows) == 3
    steps = backend.stats.steps
    cancel.set()  # a cancelled job leaves the batch at once
    with pytest.raises(Cancelled):
        await long
    assert backend.stats.steps - steps <= 2
    alone = await backend.complete(prompt(CALC), threading.Event())
    assert alone.text == "a + b" and backend.stats.rows[-1] == 1  # its row was freed


async def test_cancellation_stops_generation_mid_way(endless: TransformersBackend) -> None:
    backend = endless  # never ends by itself: only the cancel flag can stop it early
    cancel = WatchedFlag(raise_at=12)
    steps = backend.stats.steps
    task = asyncio.create_task(
        backend.complete(prompt(CALC, single_line=False, max_tokens=600), cancel)
    )
    with pytest.raises(Cancelled):
        await task
    assert 0 < backend.stats.steps - steps <= 12  # stopped at the step it was raised
    skipped = threading.Event()
    skipped.set()
    with pytest.raises(Cancelled):  # a job cancelled before it starts never reaches the model
        await backend.complete(prompt(CALC), skipped)


async def test_streamed_text_comes_before_the_answer_and_adds_up_to_it(
    backend: TransformersBackend,
) -> None:
    pieces: list[str] = []
    executor = Executor(backend)
    spec = JobSpec("s", CALC, 32, False, cache_key="carol", stream=True)
    output = await executor.run(spec, threading.Event(), pieces.append)
    assert output.text == "a + b\n\nprint(add(1, 2))\n"
    assert "".join(pieces) == output.text and len(pieces) > 3  # token by token


async def test_prompt_caches_stay_within_their_bound_least_recently_used_out(
    model_dir: Path,
) -> None:
    backend = TransformersBackend(model_dir, cache_mb=0.1)  # 104,857 bytes: a few prompts
    await backend.start()
    try:
        cache = backend.cache

        async def ask(typist: int) -> None:
            parts = PromptParts("demo", f"src/t{typist}.py", f"x{typist} = {typist}\n", "\n")
            await backend.complete(keyed(prompt(parts, max_tokens=1), f"t{typist}"), _flag())
            assert cache.nbytes <= cache.max_bytes

        for typist in range(100):
            await ask(typist)
        kept = cache.keys()
        assert 3 < len(kept) < 100 and cache.evictions == 100 - len(kept)
        assert kept == [f"t{i}" for i in range(100 - len(kept), 100)]  # the most recent
        await ask(100 - len(kept))  # the least recently used is used again: now the most
        await ask(100)  # a new typist evicts the least recently used one
        expected = [f"t{i}" for i in range(102 - len(kept), 100)]
        assert cache.keys() == [*expected, f"t{100 - len(kept)}", "t100"]
    finally:
        await backend.stop()


def keyed(p: Prompt, key: str) -> Prompt:
    return Prompt(p.rendered, p.max_tokens, p.single_line, key)


def _flag() -> threading.Event:
    return threading.Event()


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


async def test_another_documents_edits_leave_a_typists_prompt_head_and_cache_alone(
    make_server: Any, model_dir: Path
) -> None:
    """Bob edits another file of the branch between two of Alice's requests: her prompt's
    head (the other files) is the same, so the second request prefills only what follows
    the shared prefix of token ids, her new keystroke and the suffix."""
    prompts: list[str] = []

    class Recording(TransformersBackend):
        async def complete(self, prompt: Prompt, cancel: threading.Event) -> Any:
            prompts.append(prompt.text)
            return await super().complete(prompt, cancel)

    backend = Recording(model_dir, max_batch=4)
    async with (
        make_server(backend) as server,
        Client(server.url, user="alice") as a,
        Client(server.url, user="bob") as b,
    ):
        util = await b.open("demo/main:src/util.py")
        util.insert(0, "# shared helpers\n")
        await b.flush()
        doc = await a.open("demo/main:src/calc.py")
        doc.insert(0, CALC.prefix + CALC.suffix)
        await a.flush()
        first = await a.complete(doc, len(CALC.prefix))
        util.insert(0, "# bob was here\n")  # another document changes...
        await b.flush()
        doc.insert(len(CALC.prefix), "a")  # ...and Alice types one more character
        await a.flush()
        second = await a.complete(doc, len(CALC.prefix) + 1)
    head = [p[: p.index("<|fim_prefix|>")] for p in prompts]
    assert "src/util.py\n# shared helpers\n" in head[0] and head[0] == head[1]
    assert "bob was here" not in prompts[1]
    ids = [backend.tokenize(p) for p in prompts]
    shared = common_prefix(ids[0], ids[1])
    assert shared > len(backend.tokenize(head[0]))  # past the head, into the prefix
    assert first["reused_tokens"] == 0
    assert (second["prompt_tokens"], second["reused_tokens"]) == (len(ids[1]), shared)


async def test_a_jump_within_a_block_and_back_to_an_earlier_place_reuse_the_cache(
    backend: TransformersBackend,
) -> None:
    """A typist's cursor jumps two lines up: the prompt keeps its head and the prefix's
    start, so only the last tokens are prefilled. It then works far away, lines are added
    at the top of the file, and it comes back and types: that place's start is found again
    and its cached prompt serves."""
    executor = Executor(backend, max_prompt_tokens=512)
    server = Starts()
    lines = "".join(f"v{i} = f({i})\n" for i in range(600))

    async def ask(text: str, cursor: int) -> tuple[int, int]:
        prefix, suffix = window(text, cursor, 512, server, "alice")
        parts = PromptParts("demo", "src/v.py", prefix, suffix, (), cursor - len(prefix))
        spec = JobSpec("j", parts, 4, True, cache_key="alice")
        output = await executor.run(spec, threading.Event())
        return output.prompt_tokens, output.prompt_tokens - output.reused_tokens

    place = lines.index("v400 =")
    cold = await ask(lines, place)
    assert cold[1] == cold[0]
    up = lines.index("v398 =")
    moved = await ask(lines, up)  # two lines up: the suffix and the end of the prompt
    assert moved[1] <= 16 and moved[0] >= 10 * moved[1]
    far = await ask(lines, lines.index("v100 ="))  # elsewhere: the head is all it shares
    assert far[1] > moved[1] * 5
    top = "# header\n" * 3
    edited = top + lines[:up] + "w" + lines[up:]
    back = await ask(edited, len(top) + up + 1)  # back, one character typed
    assert back[1] <= 16 and back[0] >= 10 * back[1]


async def test_rows_join_the_slots_that_finished_rows_left(endless: TransformersBackend) -> None:
    """While a long job runs, short ones come one after another: each takes the slot the
    one before it left (written in place, without copying the long job's row), and each
    answer is a cold run's."""
    backend = endless
    streaming = asyncio.Event()
    cancel = threading.Event()
    pieces: list[str] = []

    def streamed(text: str) -> None:
        pieces.append(text)
        if len(pieces) > 100:
            streaming.set()

    long = asyncio.create_task(
        backend.complete_streaming(
            prompt(HELLO, single_line=False, max_tokens=1000), cancel, streamed
        )
    )
    await asyncio.wait_for(streaming.wait(), 30)  # past the room its row had at first
    texts = []
    for parts in (CALC, IMPORTS, CALC, IMPORTS, CALC):
        texts.append((await backend.complete(prompt(parts), threading.Event())).text)
    assert texts == ["a + b", "sys", "a + b", "sys", "a + b"]
    assert not long.done() and max(backend.stats.rows) == 2
    cancel.set()
    with pytest.raises(Cancelled):
        await long
