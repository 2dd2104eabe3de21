"""A tiny Qwen2-architecture code model, built and trained here in about a second.

A byte-level BPE tokenizer trained on a few strings, with Qwen2.5-Coder's special tokens,
and a 2-layer model trained to memorise a few fill-in-the-middle examples rendered with the
engine's own template, so that tests can expect exact completions. Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from collab.completion import Family, PromptParts, render

SPECIAL = [
    "<|endoftext|>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
]

# (parts, what the model should write at the cursor)
EXAMPLES = [
    (
        PromptParts("demo", "src/calc.py", "def add(a, b):\n    return ", "\n"),
        "a + b\n\nprint(add(1, 2))\n",
    ),
    (PromptParts("demo", "src/io.py", "import os\nimport ", "\n"), "sys\nimport json\n"),
    (PromptParts("demo", "src/hi.py", "def hi():\n    print('", "')\n"), "hello"),
]


def training_texts() -> list[str]:
    return [
        render(Family.QWEN_CODER, parts).text + target + SPECIAL[0] for parts, target in EXAMPLES
    ]


def build(directory: Path, *, steps: int = 200) -> Path:
    """Write the tokenizer and the trained model to ``directory``."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import AutoTokenizer, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    texts = training_texts()
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        texts, vocab_size=400, min_frequency=1, special_tokens=SPECIAL, show_progress=False
    )
    built = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer, eos_token=SPECIAL[0], pad_token=SPECIAL[0]
    )
    built.add_special_tokens({"additional_special_tokens": SPECIAL[1:]})
    built.save_pretrained(directory)
    config = Qwen2Config(
        vocab_size=len(built),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        eos_token_id=built.eos_token_id,
        pad_token_id=built.pad_token_id,
        bos_token_id=None,
    )
    config.save_pretrained(directory)
    # train with the tokenizer exactly as a backend will load it (the class follows the config)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    batch: Any = tokenizer(texts, return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    final = float(loss.detach())
    assert final < 0.05, f"the tiny model did not learn its examples: loss {final}"
    model.save_pretrained(directory)
    return directory
