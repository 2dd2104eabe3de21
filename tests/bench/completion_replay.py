"""Completion replay benchmark: real typing, today's completion path beside the new one.

Replays the recorded editing of a Svelte file (``sveltecomponent.json.gz`` from the shared
editing traces; see their README) as 1, 8 and 32 typists, each in a document of its own on
one branch of an in-process server. At each pause of the recording (a gap of 2 s or more
between two edits) a typist applies the edits made since the last one to its live document
and asks over ``/ws`` for a single-line completion at its cursor, and asks again as soon as
it is answered. Typists start at different points of the recording.

Both paths run in one command, one after the other, with the same model, each in a process
of its own: "before" is the engine at commit ``--baseline`` (its ``collab``, ``gitsync`` and
``protocol`` from ``git archive``), "after" the working tree. For each typist count and path:
prompt and prefill tokens per request (before: each prompt's length, as it prefills every
prompt whole; the padding of its batches, also prefilled, is not counted), p50 and p99 of
the request-to-answer latency, and with the ratios. After, the latency to the first streamed
piece as well. The goal at 8 typists: at least 5x fewer prefill tokens per request and a p50
at least 3x lower.

The model is a cut-down Qwen2.5-Coder (4 layers, hidden 512 in 4 heads of 128, a byte-level
BPE vocabulary of 8,000 trained on this repository's code; random weights: the figures are
about speed) on the CPU. Completions run to their token limit or the end of their line
(end-of-text tokens are ignored), so both paths generate alike. ``--gpu`` builds the
Qwen2.5-Coder-1.5B architecture (28 layers, hidden 1536; bf16, random weights) on CUDA.

The anchor, ``--sides ...,llamacpp`` (the ``bench-llamacpp`` extra; see
``llamacpp_anchor.py``): the same model written to GGUF (checked first: llama.cpp must
split a sample into the same tokens and compute the same logits), served by llama.cpp
(llama-cpp-python's OpenAI-compatible server, with its prompt cache of saved KV states),
and the same replay through the engine's HTTP backend pointed at it, which sends its
``cache_prompt`` and ``prompt_cache_key`` hints and counts with the model's tokenizer, so
that it builds the same prompts. Prefill tokens are what llama.cpp's log says it evaluated
for each prompt (the rest it kept in its KV cache). It runs in this command beside the
other sides, so its figures and the ratios to "after" come from one run.

Usage: .venv/bin/python tests/bench/completion_replay.py [--typists 1,8,32] [--requests N]
       [--sides baseline,new[,llamacpp]] [--max-tokens 32] [--gpu] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
_TRACE = Path("shared", "data", "editing-traces", "sveltecomponent.json.gz")
TRACE = next(  # the shared data beside the checkout, or beside its folder of worktrees
    (up / _TRACE for up in ROOT.parents[:2] if (up / _TRACE).exists()), ROOT.parent / _TRACE
)
BASELINE = "a079774"  # the engine before prompt caches and continuous batching
SPECIAL = [
    "<|endoftext|>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
]
QWEN_CODER_1_5B = {  # the architecture of Qwen2.5-Coder-1.5B
    "hidden_size": 1536,
    "intermediate_size": 8960,
    "num_hidden_layers": 28,
    "num_attention_heads": 12,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "max_position_embeddings": 32768,
    "rope_theta": 1000000.0,
    "tie_word_embeddings": True,
}
CUT_DOWN = {  # heads of 128 like the 1.5B's, whose heads fill the hidden size (as llama.cpp needs)
    "hidden_size": 512,
    "intermediate_size": 1536,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
}


# -- the recording -------------------------------------------------------------------------

Patch = tuple[int, int, str]  # position (code points), deleted, inserted


def bursts(path: Path, pause: float) -> tuple[str, list[list[Patch]]]:
    """The recording's start and its edits, cut at every pause of ``pause`` seconds."""
    with gzip.open(path) as raw:
        trace = json.loads(raw.read())
    out: list[list[Patch]] = []
    last = None
    for txn in trace["txns"]:
        when = datetime.fromisoformat(txn["time"].replace("Z", "+00:00")).timestamp()
        if last is None or when - last >= pause or not out:
            out.append([])
        out[-1].extend((int(p[0]), int(p[1]), str(p[2])) for p in txn["patches"])
        last = when
    return str(trace["startContent"]), out


def apply(text: str, patches: list[Patch]) -> tuple[str, int]:
    """``text`` after ``patches``, and the cursor after the last of them."""
    cursor = 0
    for position, deleted, inserted in patches:
        text = text[:position] + inserted + text[position + deleted :]
        cursor = position + len(inserted)
    return text, cursor


def starts(count: int, total: int, requests: int) -> list[int]:
    """Where each of ``count`` typists starts in the recording (the first burst, pasting a
    whole file, is skipped)."""
    stride = max(1, (total - 1 - requests) // max(1, count))
    return [1 + i * stride for i in range(count)]


# -- the model -----------------------------------------------------------------------------


def build_model(directory: Path, gpu: bool) -> None:
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    corpus = [p.read_text() for p in sorted((ROOT / "collab").rglob("*.py"))]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus, vocab_size=8000, special_tokens=SPECIAL, show_progress=False)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer, eos_token=SPECIAL[0], pad_token=SPECIAL[0]
    )
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL[1:]})
    tokenizer.save_pretrained(directory)
    settings = dict(QWEN_CODER_1_5B, **({} if gpu else CUT_DOWN))
    if not gpu:  # the cut-down model's output decodes, so that its text streams
        settings["vocab_size"] = len(tokenizer)
    config = Qwen2Config(
        **settings, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).to(torch.bfloat16 if gpu else torch.float32)
    model.save_pretrained(directory)


# -- one side, in a process of its own ------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


async def run_side(args: argparse.Namespace) -> dict[str, Any]:
    from collab import Client, CollabServer, ServerConfig
    from collab.completion.transformers_backend import TransformersBackend
    from gitsync import create_demo_repo

    class Counting(TransformersBackend):
        """Counts each prompt's tokens (what a backend without a prompt cache prefills)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.counted: list[int] = []

        async def complete(self, prompt: Any, cancel: threading.Event) -> Any:
            self.counted.append(self.count_tokens(prompt.text))
            return await super().complete(prompt, cancel)

    start_text, recorded = bursts(TRACE, args.pause)
    counts = [int(n) for n in args.typists.split(",")]
    places = starts(max(counts), len(recorded), args.requests)
    texts: dict[int, str] = {}
    text = start_text
    for index, burst in enumerate(recorded[: max(places) + 1]):
        if index in places:
            texts[index] = text
        text, _ = apply(text, burst)
    new_side = args.side == "new"
    anchor = args.side == "llamacpp"
    results: dict[str, Any] = {}
    for count in counts:
        with tempfile.TemporaryDirectory() as tmp:
            files = {f"src/t{i}.svelte": texts[places[i]] for i in range(count)}
            files["src/warmup.svelte"] = texts[places[0]]
            for extra in ("completion/prompts.py", "completion/context.py", "live/room.py"):
                files[f"lib/{Path(extra).name}"] = (ROOT / "collab" / extra).read_text()
            create_demo_repo(Path(tmp) / "repos" / "bench", files)
            config = ServerConfig(
                repos=Path(tmp) / "repos",
                data_dir=Path(tmp) / "data",
                port=0,
                completion_backend="none",
                completion_rate=0.0,
                completion_timeout=900.0,
                completion_queue=4096,
            )
            async with contextlib.AsyncExitStack() as stack:
                if anchor:  # llama.cpp, a server of its own, asked by the HTTP backend
                    from llamacpp_anchor import LlamaCppServer, http_backend

                    llama = await stack.enter_async_context(
                        LlamaCppServer(Path(args.gguf), Path(tmp) / "llama.log")
                    )
                    backend: Any = http_backend(llama.url, Path(args.model))
                else:
                    backend = Counting(args.model, max_batch=args.batch, ignore_eos=True)
                server = CollabServer(config)
                server.completion.backend = backend
                await stack.enter_async_context(server)
                url = server.url
                async with Client(url, user="warmup") as client:  # load, first forward passes
                    doc = await client.open("bench/main:src/warmup.svelte")
                    for cursor in (len(str(doc)) // 2, len(str(doc))):
                        await client.complete(doc, cursor, max_tokens=args.max_tokens)
                if anchor:
                    since = llama.mark()
                else:
                    backend.counted.clear()
                rows: list[dict[str, float]] = []
                started = time.perf_counter()
                await asyncio.gather(
                    *(
                        typist(Client, url, i, recorded, places[i], args, rows, new_side)
                        for i in range(count)
                    )
                )
                wall = time.perf_counter() - started
            served = llama.served(since) if anchor else None
            counted = [] if anchor else list(backend.counted)
        results[str(count)] = summary(rows, counted, wall, served)
        print(f"  {args.side}: {count} typists done in {wall:.1f} s", file=sys.stderr)
    return results


async def typist(
    client_class: Any,
    url: str,
    number: int,
    recorded: list[list[Patch]],
    start: int,
    args: argparse.Namespace,
    rows: list[dict[str, float]],
    stream: bool,
) -> None:
    async with client_class(url, user=f"typist{number}") as client:
        doc = await client.open(f"bench/main:src/t{number}.svelte")
        for request in range(args.requests):
            cursor = 0
            for position, deleted, inserted in recorded[start + request]:
                if deleted:
                    doc.delete(position, deleted)
                if inserted:
                    doc.insert(position, inserted)
                cursor = position + len(inserted)
            while not client.events.empty():
                client.events.get_nowait()
            asked = time.perf_counter()
            options: dict[str, Any] = {"mode": "line", "max_tokens": args.max_tokens}
            if stream:
                options["stream"] = request
            call = asyncio.ensure_future(
                client.call("complete", timeout=900.0, doc=doc.id, index=cursor, **options)
            )
            first = math.nan
            if stream:
                piece = asyncio.ensure_future(client.events.get())
                await asyncio.wait({call, piece}, return_when=asyncio.FIRST_COMPLETED)
                if piece.done():
                    first = (time.perf_counter() - asked) * 1000
                piece.cancel()
            try:
                reply = await call
            except Exception as exc:  # counts as infinitely slow
                print(f"  typist {number}: {exc!r}", file=sys.stderr)
                reply = {}
                asked = -math.inf
            rows.append(
                {
                    "ms": (time.perf_counter() - asked) * 1000,
                    "first_ms": first,
                    "prompt": float(reply.get("prompt_tokens", math.nan)),
                    "reused": float(reply.get("reused_tokens", math.nan)),
                }
            )


def summary(
    rows: list[dict[str, float]], counted: list[int], wall: float, served: list[Any] | None
) -> dict[str, Any]:
    latency = [r["ms"] for r in rows]
    first = [r["first_ms"] for r in rows if not math.isnan(r["first_ms"])]
    reported = [r for r in rows if not math.isnan(r["prompt"])]
    extra: dict[str, Any] = {}
    if served is not None:  # llama.cpp: its prompt counts, and from its log what it evaluated
        prompt = sum(r["prompt"] for r in reported) / max(1, len(reported))
        prefill = sum(s.prefilled for s in served) / max(1, len(reported))
        extra = {"llama_runs": len(served), "cache_restores": sum(s.restored for s in served)}
    elif reported:  # the new path reports what it reused
        prompt = sum(r["prompt"] for r in reported) / len(reported)
        prefill = sum(r["prompt"] - r["reused"] for r in reported) / len(reported)
    else:  # the baseline prefills each prompt whole
        prompt = prefill = sum(counted) / max(1, len(counted))
    return {
        "requests": len(rows),
        "prompt_tokens": round(prompt, 1),
        "prefill_tokens": round(prefill, 1),
        "p50_ms": round(percentile(latency, 0.5), 1),
        "p99_ms": round(percentile(latency, 0.99), 1),
        "first_p50_ms": round(percentile(first, 0.5), 1) if first else None,
        "requests_per_s": round(len(rows) / wall, 2),
        **extra,
    }


# -- both sides ------------------------------------------------------------------------------


def baseline_tree(commit: str, into: Path) -> Path:
    archive = subprocess.run(
        ["git", "archive", commit, "collab", "gitsync", "protocol"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--typists", default="1,8,32")
    parser.add_argument("--requests", type=int, default=12, help="requests per typist")
    parser.add_argument("--sides", default="baseline,new")
    parser.add_argument("--baseline", default=BASELINE, help="the commit to compare with")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8, help="rows the model runs at once")
    parser.add_argument("--pause", type=float, default=2.0, help="seconds that make a pause")
    parser.add_argument("--gpu", action="store_true", help="the 1.5B architecture, on CUDA")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--side", help=argparse.SUPPRESS)
    parser.add_argument("--tree", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--gguf", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.gpu and "llamacpp" in args.sides:
        parser.error("llamacpp runs the cut-down model on the CPU: leave out --gpu")
    if args.side:  # a child: import the engine from its tree
        sys.path.insert(0, args.tree)
        print(json.dumps(asyncio.run(run_side(args))))
        return
    sides = args.sides.split(",")
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "model"
        model.mkdir()
        build_model(model, args.gpu)
        if "llamacpp" in sides:  # the same model for llama.cpp, checked to be the same
            from llamacpp_anchor import check_same_model, write_gguf

            gguf = write_gguf(model, Path(tmp) / "model.gguf")
            start_text, recorded = bursts(TRACE, args.pause)
            sample = apply(start_text, recorded[0])[0][:4000]  # the file, once pasted
            figures["check"] = check_same_model(model, gguf, sample)
            print(f"  {figures['check']}", file=sys.stderr)
        for side in sides:
            tree = str(ROOT)
            if side == "baseline":
                (Path(tmp) / "baseline").mkdir()
                tree = str(baseline_tree(args.baseline, Path(tmp) / "baseline"))
            command = [sys.executable, __file__, "--side", side, "--tree", tree]
            command += ["--model", str(model), "--typists", args.typists]
            command += ["--requests", str(args.requests), "--max-tokens", str(args.max_tokens)]
            command += ["--batch", str(args.batch), "--pause", str(args.pause)]
            if side == "llamacpp":
                command += ["--gguf", str(gguf)]
            env = dict(os.environ, PYTHONPATH=tree)
            done = subprocess.run(command, env=env, check=True, stdout=subprocess.PIPE, cwd=tmp)
            figures[side] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    report(figures, args)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


def report(figures: dict[str, Any], args: argparse.Namespace) -> None:
    import torch

    device = "CUDA, " + torch.cuda.get_device_name(0) if args.gpu else "CPU"
    shape = "Qwen2.5-Coder-1.5B architecture" if args.gpu else "cut-down Qwen2.5-Coder"
    print(
        f"{shape} (random weights) on {device}, {torch.get_num_threads()} threads; single-line"
        f" completions of up to {args.max_tokens} tokens, {args.requests} requests per typist,"
        f" batches of {args.batch}"
    )
    if "check" in figures:
        print(figures["check"])
    header = f"{'typists':>7} {'path':>9} {'requests':>8} {'prompt tok':>10} {'prefill tok':>11}"
    print(header + f" {'p50 ms':>8} {'p99 ms':>8} {'first p50':>9} {'req/s':>6}")
    sides = (("baseline", "before"), ("new", "after"), ("llamacpp", "llama.cpp"))
    for count in args.typists.split(","):
        for side, label in sides:
            row = figures.get(side, {}).get(count)
            if row is None:
                continue
            first = row["first_p50_ms"] if row["first_p50_ms"] is not None else "-"
            print(
                f"{count:>7} {label:>9} {row['requests']:>8} {row['prompt_tokens']:>10}"
                f" {row['prefill_tokens']:>11} {row['p50_ms']:>8} {row['p99_ms']:>8}"
                f" {first:>9} {row['requests_per_s']:>6}"
            )
        before, after = figures.get("baseline", {}).get(count), figures.get("new", {}).get(count)
        if before and after:
            prefill, p50, p99 = _ratios(before, after)
            print(f"{'':>7} {'ratio':>9}   {_compared(prefill, p50, p99)}")
            if count == "8":
                met = prefill >= 5 and p50 >= 3
                print(f"{'':>17} goal at 8 typists (5x, 3x): {'met' if met else 'NOT met'}")
        anchor = figures.get("llamacpp", {}).get(count)
        if anchor and after:
            prefill, p50, p99 = _ratios(anchor, after)
            compared = _compared(prefill, p50, p99)
            print(f"{'':>7} {'vs llama':>9}   after to llama.cpp: {compared}")
        if anchor:
            print(
                f"{'':>17} llama.cpp ran {anchor['llama_runs']} completions, loaded"
                f" {anchor['cache_restores']} KV states from its prompt cache"
            )


def _compared(prefill: float, p50: float, p99: float) -> str:
    """The ratios in words, each the way round that reads as at least 1x."""

    def times(ratio: float, better: str, worse: str) -> str:
        return f"{ratio:.1f}x {better}" if ratio >= 1 else f"{1 / ratio:.1f}x {worse}"

    return (
        f"prefill tokens {times(prefill, 'fewer', 'more')}, p50 {times(p50, 'lower', 'higher')},"
        f" p99 {times(p99, 'lower', 'higher')}"
    )


def _ratios(slow: dict[str, Any], fast: dict[str, Any]) -> tuple[float, float, float]:
    """How many times ``fast`` prefills fewer tokens, and its p50 and p99 are lower."""
    return (
        slow["prefill_tokens"] / max(fast["prefill_tokens"], 1e-9),
        slow["p50_ms"] / fast["p50_ms"],
        slow["p99_ms"] / fast["p99_ms"],
    )


if __name__ == "__main__":
    main()
