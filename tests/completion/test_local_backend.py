"""The default local model: completes words and idioms from the repository's own code."""

from __future__ import annotations

import threading

import pytest

from collab.completion import Cancelled, ContextFile, Family, Prompt, PromptParts, render
from collab.completion.local_backend import LocalBackend, tokenize


def prompt(prefix: str, suffix: str = "", *context: ContextFile, single: bool = True) -> Prompt:
    parts = PromptParts("demo", "src/app.py", prefix, suffix, context)
    return Prompt(render(Family.PLAIN, parts), 32, single)


async def test_completes_the_word_and_the_line_from_other_files() -> None:
    backend = LocalBackend()
    util = ContextFile("src/util.py", "def page(request):\n    return render_template(request)\n")
    result = await backend.complete(prompt("x = render_t", "", util), threading.Event())
    assert result.text == "emplate(request)"
    result = await backend.complete(
        prompt("x = 1\nprint('hel", "\nprint('hello')\n"), threading.Event()
    )
    assert result.text == "lo')"


async def test_single_line_stops_at_the_line_end_and_block_goes_on() -> None:
    backend = LocalBackend()
    code = "def a():\n    return 1\n\ndef b():\n    return 1\n\n"
    line = await backend.complete(prompt(code + "def c():"), threading.Event())
    assert line.text == "\n    return 1"
    block = await backend.complete(prompt(code + "def c():", single=False), threading.Event())
    assert block.text.startswith("\n    return 1\n\ndef")


async def test_cancelled_before_start() -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        await LocalBackend().complete(prompt("x"), cancel)


def test_tokenize_keeps_every_character() -> None:
    text = "def f(x):\n\tresult = x  * 2 # héllo 🎉\n"
    assert "".join(tokenize(text)) == text
