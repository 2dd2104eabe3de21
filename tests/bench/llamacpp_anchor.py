"""llama.cpp as the completion replay's anchor: the bench model in GGUF, served by llama.cpp.

``write_gguf`` writes the replay bench's model directory (a Qwen2 ``save_pretrained`` with
its byte-level BPE ``tokenizer.json``) as a GGUF file with PyPI's ``gguf`` package: the same
architecture, the same float32 weights, the same vocabulary, merges and special tokens.
``check_same_model`` proves it on a text: llama.cpp must split it into the same tokens as
the Hugging Face tokenizer, and its logits must match the transformers model's.

``LlamaCppServer`` runs llama-cpp-python's OpenAI-compatible server (``python -m
llama_cpp.server``) on that file with its prompt cache (``LlamaRAMCache``: saved KV states
looked up by the longest shared token prefix, least recently used evicted), verbose, and
reads back from its log what llama.cpp did for each completion: how many prompt tokens it
kept in its KV cache (``prefix-match hit``) and so did not evaluate again.

Needs the ``bench-llamacpp`` extra (llama-cpp-python, which compiles llama.cpp, and gguf).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["LlamaCppServer", "Served", "check_same_model", "http_backend", "write_gguf"]

ALIAS = "qwen2.5-coder-bench"  # the served name: the engine picks the Qwen FIM format from it


# -- the model in GGUF -----------------------------------------------------------------------


def write_gguf(model_dir: Path, out: Path) -> Path:
    """Write the transformers model in ``model_dir`` to ``out`` (GGUF, float32)."""
    import gguf
    from safetensors.numpy import load_file

    config = json.loads((model_dir / "config.json").read_text())
    if config.get("model_type") != "qwen2":
        raise ValueError(f"not a Qwen2 model: {config.get('model_type')!r}")
    layers = int(config["num_hidden_layers"])
    heads = int(config["num_attention_heads"])
    head_dim = int(config.get("head_dim") or config["hidden_size"] // heads)
    rope = config.get("rope_parameters") or {}
    writer = gguf.GGUFWriter(str(out), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.QWEN2])
    writer.add_name(ALIAS)
    writer.add_context_length(int(config["max_position_embeddings"]))
    writer.add_embedding_length(int(config["hidden_size"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_block_count(layers)
    writer.add_head_count(heads)
    writer.add_head_count_kv(int(config["num_key_value_heads"]))
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_freq_base(float(rope.get("rope_theta", config.get("rope_theta", 1e4))))
    writer.add_layer_norm_rms_eps(float(config["rms_norm_eps"]))
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    _write_vocabulary(writer, model_dir, int(config["vocab_size"]))

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN2, layers)
    tensors = load_file(str(model_dir / "model.safetensors"))
    for name, array in sorted(tensors.items()):
        if name == "lm_head.weight" and config.get("tie_word_embeddings"):
            continue  # llama.cpp reads a missing output matrix as the tied embeddings
        mapped = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if mapped is None:
            raise ValueError(f"no GGUF name for tensor {name}")
        writer.add_tensor(mapped, array.astype("float32"))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def _write_vocabulary(writer: Any, model_dir: Path, vocab_size: int) -> None:
    """The byte-level BPE of ``tokenizer.json``: tokens by id, merges, special tokens."""
    import gguf

    spec = json.loads((model_dir / "tokenizer.json").read_text())
    pre = spec.get("pre_tokenizer") or {}
    if spec["model"]["type"] != "BPE" or pre.get("type") != "ByteLevel":
        raise ValueError("only a byte-level BPE tokenizer is written")
    vocab: dict[str, int] = dict(spec["model"]["vocab"])
    special = {t["content"]: int(t["id"]) for t in spec.get("added_tokens", [])}
    vocab.update(special)
    if sorted(vocab.values()) != list(range(vocab_size)):
        raise ValueError("the tokenizer's ids do not cover the model's vocabulary exactly")
    tokens = sorted(vocab, key=vocab.__getitem__)
    kinds = [
        gguf.TokenType.CONTROL if token in special else gguf.TokenType.NORMAL for token in tokens
    ]
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    settings = json.loads((model_dir / "tokenizer_config.json").read_text())
    eos = special[settings["eos_token"]]
    writer.add_tokenizer_model("gpt2")
    # transformers loads a qwen2 model's tokenizer as Qwen2Tokenizer, which splits words
    # with Qwen2's regex whatever tokenizer.json says; llama.cpp is told to do the same
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types(kinds)
    writer.add_token_merges(merges)
    writer.add_eos_token_id(eos)
    writer.add_pad_token_id(special.get(settings.get("pad_token", ""), eos))
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)


def check_same_model(model_dir: Path, gguf_path: Path, text: str) -> str:
    """Raise unless llama.cpp tokenizes ``text`` as the transformers tokenizer does and its
    logits after ``text`` match the transformers model's; return a line saying how close."""
    import llama_cpp
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    expected = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not expected:
        raise ValueError("no text to compare the models on")
    llama = llama_cpp.Llama(
        str(gguf_path), n_ctx=max(512, len(expected) + 8), logits_all=True, verbose=False
    )
    try:
        got = llama.tokenize(text.encode(), add_bos=False, special=True)
        if got != expected:
            at = next(
                (i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b), None
            )
            raise RuntimeError(
                f"llama.cpp splits the text into {len(got)} tokens, transformers into"
                f" {len(expected)} (first difference at {at})"
            )
        llama.eval(got)
        theirs = np.asarray(llama.scores[: len(got)], dtype=np.float64)
    finally:
        llama.close()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    with torch.no_grad():
        ours = model(torch.tensor([expected])).logits[0].double().numpy()
    spread = float(np.abs(ours).max())
    worst = float(np.abs(ours - theirs).max())
    agree = float((ours.argmax(-1) == theirs.argmax(-1)).mean())
    if worst > 1e-2 * max(spread, 1e-6) or agree < 0.99:
        raise RuntimeError(
            f"llama.cpp's logits differ from transformers' (max |diff| {worst:.2e} of"
            f" {spread:.2e}, top-1 agrees on {agree:.1%})"
        )
    return (
        f"llama.cpp: same {len(got)} tokens as transformers; logits max |diff| {worst:.1e}"
        f" (of {spread:.1e}), top-1 agrees on {agree:.0%} of positions"
    )


# -- llama-cpp-python's server ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Served:
    """What llama.cpp did for one completion, from its log."""

    prefilled: int  # prompt tokens it evaluated (the rest it kept in its KV cache)
    restored: bool  # it loaded a saved KV state from the prompt cache first (``cache hit``)


_HIT = re.compile(r"Llama\.generate: \d+ prefix-match hit, remaining (\d+) prompt tokens")
_FULL = re.compile(r"Llama\.generate: full prompt already cached")
_PROMPT_EVAL = re.compile(r"llama_perf_context_print:\s+prompt eval time =.*/\s*(\d+) tokens")
_END = re.compile(r"llama_perf_context_print:\s+total time")


class LlamaCppServer:
    """``python -m llama_cpp.server`` on ``gguf_path`` on a free loopback port, for one
    ``async with`` block; its log goes to ``log`` and is read by ``served``."""

    def __init__(
        self,
        gguf_path: Path,
        log: Path,
        *,
        n_ctx: int = 8192,
        cache_bytes: int = 1 << 30,
        threads: int | None = None,
    ) -> None:
        self.gguf_path = gguf_path
        self.log = log
        self.n_ctx = n_ctx
        self.cache_bytes = cache_bytes
        self.threads = threads or os.cpu_count() or 1
        self.port = _free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> LlamaCppServer:
        settings = {
            "model": str(self.gguf_path),
            "model_alias": ALIAS,
            "host": "127.0.0.1",
            "port": str(self.port),
            "n_ctx": str(self.n_ctx),
            "n_threads": str(self.threads),
            "n_threads_batch": str(self.threads),
            "cache": "true",  # the prompt cache: KV states kept across requests
            "cache_type": "ram",
            "cache_size": str(self.cache_bytes),
            "interrupt_requests": "false",  # a waiting request does not cut a running one
            "verbose": "true",  # the log says what each completion reused
        }
        command = [sys.executable, "-m", "llama_cpp.server"]
        for key, value in settings.items():
            command += [f"--{key}", value]
        with self.log.open("wb") as sink:
            self._process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
        await self._wait_ready()
        return self

    async def _wait_ready(self, timeout: float = 120.0) -> None:
        import aiohttp

        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self._process is not None and self._process.poll() is not None:
                    raise RuntimeError(f"llama_cpp.server exited; see {self.log}")
                try:
                    async with session.get(f"{self.url}/v1/models") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
        raise TimeoutError(f"llama_cpp.server did not answer in {timeout} s; see {self.log}")

    async def __aexit__(self, *exc: object) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                await asyncio.to_thread(self._process.wait, 10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                await asyncio.to_thread(self._process.wait)
            self._process = None

    def mark(self) -> int:
        """Where the log ends now: ``served(mark)`` reads only what comes after."""
        return self.log.stat().st_size

    def served(self, since: int = 0) -> list[Served]:
        """Each completion llama.cpp ran since ``since``, in order (the server runs one at a
        time, so each one's lines are together)."""
        with self.log.open("rb") as raw:
            raw.seek(since)
            lines = raw.read().decode("utf-8", "replace").splitlines()
        out: list[Served] = []
        prefilled: int | None = None  # known from the prefix match, else from llama.cpp's count
        evaluated, restored = 0, False
        for line in lines:
            if "Llama._create_completion: cache hit" in line:
                restored = True
            elif match := _HIT.search(line):
                prefilled = int(match.group(1))
            elif _FULL.search(line):
                prefilled = 0
            elif match := _PROMPT_EVAL.search(line):
                evaluated = int(match.group(1))
            elif _END.search(line):
                out.append(Served(evaluated if prefilled is None else prefilled, restored))
                prefilled, evaluated, restored = None, 0, False
        return out


def http_backend(url: str, model_dir: Path) -> Any:
    """The engine's HTTP backend for ``url``, counting prompt tokens with the model's own
    tokenizer as the transformers backend does, so that both build the same prompts."""
    from transformers import AutoTokenizer

    from collab.completion.http_backend import HttpBackend

    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    class Tokenized(HttpBackend):
        def count_tokens(self, text: str) -> int:
            return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    return Tokenized(url, model=ALIAS, timeout=900.0)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
