"""Model benchmark: the transformers backend with a 1.5B code model architecture.

Writes a Qwen2.5-Coder-1.5B configuration (random weights: the figures are about speed,
not quality) and a tokenizer trained on this repository's own code, then runs single-line
completions of up to 32 tokens on prompts of about 1,500 tokens (the engine's own
fill-in-the-middle template, with other files as context) for 1, 8 and 32 concurrent typists,
each asking again as soon as it is answered. Every completion runs to its token limit.
Reports p50/p99 end-to-end latency (render + tokenize + queue + generate) and tokens/s.

On CUDA the backend runs bf16 with a static KV cache and compiled decoding (CUDA graphs);
the first requests of each shape compile, so a warm-up round runs first. ``--device cpu
--small`` gives a quick figure with a 4-layer model of the same vocabulary on the CPU.

Usage: .venv/bin/python tests/bench/completion_gpu.py [--device cpu --small]
       [--typists 1,8,32] [--rounds N] [--prompt-tokens 1500] [--max-tokens 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from collab.completion import ContextFile, PromptParts, render  # noqa: E402
from collab.completion.executor import Executor, JobSpec  # noqa: E402
from collab.completion.metrics import percentile  # noqa: E402
from collab.completion.transformers_backend import TransformersBackend  # noqa: E402

QWEN_CODER_1_5B = {  # the architecture of Qwen2.5-Coder-1.5B
    "model_type": "qwen2",
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
SMALL = {"hidden_size": 512, "intermediate_size": 1536, "num_hidden_layers": 4}
SPECIAL = [
    "<|endoftext|>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
]


def corpus() -> dict[str, str]:
    files = sorted((ROOT / "collab").rglob("*.py")) + sorted((ROOT / "gitsync").rglob("*.py"))
    return {str(p.relative_to(ROOT)): p.read_text() for p in files}


def build_model(directory: Path, small: bool, dtype: str) -> None:
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        corpus().values(), vocab_size=8000, special_tokens=SPECIAL, show_progress=False
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer, eos_token=SPECIAL[0], pad_token=SPECIAL[0]
    )
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL[1:]})
    tokenizer.save_pretrained(directory)
    settings = dict(QWEN_CODER_1_5B, **(SMALL if small else {}))
    settings.pop("model_type")
    config = Qwen2Config(
        **settings, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    torch.manual_seed(0)
    with torch.device("cpu"):
        model = Qwen2ForCausalLM(config).to(getattr(torch, dtype))
    model.save_pretrained(directory)


def prompts(count: int) -> list[PromptParts]:
    """Different cursors in this repository's files, with other files as context."""
    files = list(corpus().items())
    out = []
    for i in range(count):
        path, text = files[i % len(files)]
        cut = len(text) // 3 + 37 * i % max(1, len(text) // 3)
        context = tuple(ContextFile(p, t) for p, t in files[i + 1 : i + 4])
        out.append(PromptParts("collab", path, text[:cut], text[cut:], context))
    return out


async def round_of(
    executor: Executor, typists: int, rounds: int, parts: list[PromptParts], max_tokens: int
) -> dict[str, Any]:
    latencies: list[float] = []
    tokens = 0

    async def typist(number: int) -> None:
        nonlocal tokens
        for r in range(rounds):
            spec = JobSpec(f"{number}-{r}", parts[(number + r) % len(parts)], max_tokens, True)
            started = time.perf_counter()
            output = await executor.run(spec, threading.Event())
            latencies.append((time.perf_counter() - started) * 1000)
            tokens += output.tokens

    started = time.perf_counter()
    await asyncio.gather(*(typist(n) for n in range(typists)))
    wall = time.perf_counter() - started
    return {
        "typists": typists,
        "requests": len(latencies),
        "p50_ms": round(percentile(latencies, 0.5), 1),
        "p99_ms": round(percentile(latencies, 0.99), 1),
        "tokens_per_s": round(tokens / wall, 1),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.startswith("cuda")
    small = args.small or not cuda
    dtype = "bfloat16" if cuda else "float32"
    typists = [int(t) for t in args.typists.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        started = time.perf_counter()
        build_model(directory, small, dtype)
        built = time.perf_counter() - started
        backend = TransformersBackend(
            directory, device=device, max_batch=max(typists), ignore_eos=True
        )
        await backend.start()
        try:
            executor = Executor(backend, max_prompt_tokens=args.prompt_tokens)
            parts = prompts(64)
            sizes = [
                backend.count_tokens(
                    render(backend.family, p, args.prompt_tokens, backend.count_tokens).text
                )
                for p in parts[:8]
            ]
            warm = time.perf_counter()
            for count in typists if cuda else [1]:  # compile and record every batch shape
                await round_of(executor, count, 1, parts, args.max_tokens)
            warmed = time.perf_counter() - warm
            rounds = args.rounds or (4 if cuda else 2)
            results = [
                await round_of(executor, count, rounds, parts, args.max_tokens) for count in typists
            ]
        finally:
            await backend.stop()
    return {
        "device": torch.cuda.get_device_name(0)
        if cuda
        else f"cpu, {torch.get_num_threads()} threads",
        "model": "Qwen2.5-Coder-1.5B architecture" + (" (4 layers, hidden 512)" if small else ""),
        "dtype": dtype,
        "compiled": backend.compiled,
        "prompt_tokens": round(sum(sizes) / len(sizes)),
        "max_new_tokens": args.max_tokens,
        "build_s": round(built, 1),
        "warmup_s": round(warmed, 1),
        "results": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", help="cuda, cuda:N or cpu (default: cuda when present)")
    parser.add_argument("--small", action="store_true", help="4 layers (quick CPU figure)")
    parser.add_argument("--typists", default="1,8,32")
    parser.add_argument("--rounds", type=int, help="requests per typist (4 on CUDA, 2 on CPU)")
    parser.add_argument("--prompt-tokens", type=int, default=1500)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    figures = asyncio.run(run(args))
    print(
        f"{figures['model']}, {figures['dtype']}, on {figures['device']}"
        f"{', static cache + compiled decoding' if figures['compiled'] else ''}"
    )
    print(
        f"prompts of ~{figures['prompt_tokens']} tokens, single-line, "
        f"{figures['max_new_tokens']} new tokens each; model built in {figures['build_s']} s, "
        f"warm-up {figures['warmup_s']} s"
    )
    print(f"{'typists':>8} {'requests':>9} {'p50 ms':>9} {'p99 ms':>9} {'tokens/s':>9}")
    for row in figures["results"]:
        print(
            f"{row['typists']:>8} {row['requests']:>9} {row['p50_ms']:>9} "
            f"{row['p99_ms']:>9} {row['tokens_per_s']:>9}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
