"""Fill-in-the-middle templates per model family, family detection, budgets, post-processing."""

from __future__ import annotations

import pytest

from collab.completion.executor import finish
from collab.completion.prompts import (
    ContextFile,
    Family,
    PromptParts,
    approx_tokens,
    cut_single_line,
    detect_family,
    fit,
    render,
)

PARTS = PromptParts(
    repo="demo",
    path="src/app.py",
    prefix="def add(a, b):\n    return ",
    suffix="\n\nprint(add(1, 2))\n",
    context=(ContextFile("src/util.py", "def double(x):\n    return x * 2\n"),),
)
BARE = PromptParts("demo", "src/app.py", "x = ", "\n")
DS = "<\uff5cfim\u2581begin\uff5c>", "<\uff5cfim\u2581hole\uff5c>", "<\uff5cfim\u2581end\uff5c>"


def test_starcoder2_uses_repository_and_file_markers() -> None:
    rendered = render(Family.STARCODER2, PARTS)
    assert rendered.text == (
        "<repo_name>demo<file_sep>src/util.py\ndef double(x):\n    return x * 2\n"
        "<file_sep><fim_prefix>src/app.py\ndef add(a, b):\n    return "
        "<fim_suffix>\n\nprint(add(1, 2))\n<fim_middle>"
    )
    assert "<file_sep>" in rendered.stop and "<|endoftext|>" in rendered.stop


def test_qwen_coder_uses_its_repository_format() -> None:
    rendered = render(Family.QWEN_CODER, PARTS)
    assert rendered.text == (
        "<|repo_name|>demo\n<|file_sep|>src/util.py\ndef double(x):\n    return x * 2\n\n"
        "<|file_sep|>src/app.py\n<|fim_prefix|>def add(a, b):\n    return "
        "<|fim_suffix|>\n\nprint(add(1, 2))\n<|fim_middle|>"
    )
    assert {"<|endoftext|>", "<|file_sep|>", "<|fim_pad|>"} <= set(rendered.stop)


def test_deepseek_coder_codellama_starcoder_replit_templates() -> None:
    begin, hole, end = DS
    assert render(Family.DEEPSEEK_CODER, BARE).text == f"{begin}x = {hole}\n{end}"
    assert render(Family.CODELLAMA, BARE).text == "<PRE> x =  <SUF>\n <MID>"
    assert render(Family.STARCODER, BARE).text == "<fim_prefix>x = <fim_suffix>\n<fim_middle>"
    assert render(Family.REPLIT, BARE).text == "<fim_prefix>x = <fim_suffix>\n<fim_middle>"
    assert render(Family.PLAIN, BARE).text == "x = "
    assert "<EOT>" in render(Family.CODELLAMA, BARE).stop


def test_families_without_repository_tokens_get_other_files_as_comments() -> None:
    begin, hole, _ = DS
    text = render(Family.DEEPSEEK_CODER, PARTS).text
    assert text.startswith(f"{begin}# Path: src/util.py\ndef double(x):\n    return x * 2\n\n")
    assert f"# Path: src/app.py\ndef add(a, b):\n    return {hole}" in text
    js = PromptParts("demo", "web/app.js", "let x = ", "", (ContextFile("web/a.js", "f()"),))
    assert render(Family.CODELLAMA, js).text.startswith("<PRE> // Path: web/a.js\nf()\n\n")


@pytest.mark.parametrize(
    ("model_type", "name", "vocabulary", "family"),
    [
        ("starcoder2", "bigcode/starcoder2-3b", (), Family.STARCODER2),
        ("gpt_bigcode", "bigcode/starcoderbase-1b", (), Family.STARCODER),
        ("qwen2", "Qwen/Qwen2.5-Coder-1.5B", (), Family.QWEN_CODER),
        ("llama", "deepseek-ai/deepseek-coder-1.3b-base", (), Family.DEEPSEEK_CODER),
        ("llama", "codellama/CodeLlama-7b-hf", (), Family.CODELLAMA),
        ("mpt", "replit/replit-code-v1_5-3b", (), Family.REPLIT),
        ("llama", "/models/my-model", ("<PRE>", "<SUF>"), Family.CODELLAMA),
        (None, "/models/x", ("<\uff5cfim\u2581begin\uff5c>",), Family.DEEPSEEK_CODER),
        (None, "/models/x", ("<fim_prefix>", "<file_sep>"), Family.STARCODER2),
        (None, "/models/x", ("<|fim_prefix|>",), Family.QWEN_CODER),
        ("gpt2", "/models/x", (), Family.PLAIN),
    ],
)
def test_detect_family(
    model_type: str | None, name: str, vocabulary: tuple[str, ...], family: Family
) -> None:
    assert detect_family(model_type, name, vocabulary) is family


def test_budget_trims_prefix_start_suffix_end_and_drops_context_last() -> None:
    long_prefix = "".join(f"line_{i} = {i}\n" for i in range(400))
    long_suffix = "".join(f"after_{i}()\n" for i in range(400))
    many = tuple(ContextFile(f"f{i}.py", "y = 1\n" * 200) for i in range(10))
    parts = PromptParts("demo", "a.py", long_prefix, long_suffix, many)
    prefix, suffix, context = fit(parts, 1000)
    assert long_prefix.endswith(prefix) and prefix.startswith("line_")  # whole lines, the end
    assert long_suffix.startswith(suffix) and suffix.endswith("\n")
    total = approx_tokens(prefix) + approx_tokens(suffix)
    total += sum(approx_tokens(c.text) + approx_tokens(c.path) + 4 for c in context)
    assert total <= 1000
    assert approx_tokens(prefix) >= 500  # the prefix gets the largest share
    assert [c.path for c in context] == [f"f{i}.py" for i in range(len(context))]
    small = fit(PARTS, 4096)
    assert small == (PARTS.prefix, PARTS.suffix, PARTS.context)  # nothing cut when it fits


def test_single_line_cut_and_finish() -> None:
    assert cut_single_line("a + b\nmore") == ("a + b", True)
    assert cut_single_line("\n    return 1\n") == ("\n    return 1", True)
    assert cut_single_line("  x") == ("  x", False)
    rendered = render(Family.QWEN_CODER, PromptParts("r", "p", "f(", ")\nnext"))
    assert finish("a, b)\nz", rendered, True, 100) == "a, b"  # suffix already has ")"
    assert finish("a<|endoftext|>junk", rendered, False, 100) == "a"
    assert finish("abcdef", rendered, False, 3) == "abc"
