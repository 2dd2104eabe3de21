"""Context from the whole branch: files nobody has open come from git at the branch head (or
from their live documents), ranked by what the current file imports, recent edits and name
similarity; and the prompt's head stays put from one keystroke to the next."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from fake_backends import FakeBackend
from gitcli import git

from collab import Client
from collab.completion import Family, PromptParts, render
from collab.completion.branch_context import Candidate, imported_paths, rank
from collab.completion.context import drift, window
from collab.completion.excerpt import Starts
from collab.completion.prompts import ContextFile, approx_tokens
from gitsync import create_demo_repo

PROJECT = {
    "pkg/main.py": "from pkg.helpers import scale\n\n\ndef run(x):\n    return scale(x)\n",
    "pkg/helpers.py": "def scale(x):\n    return x * 3\n",
    "notes/zoo.txt": "giraffe, zebra, okapi\n" * 20,
}
MAIN = "proj/main:pkg/main.py"


async def test_an_unopened_file_the_current_one_imports_comes_from_git_and_first(
    make_server: Any, code_repos: Path
) -> None:
    create_demo_repo(code_repos / "proj", PROJECT)
    backend = FakeBackend()
    async with make_server(backend) as server, Client(server.url, user="alice") as a:
        doc = await a.open(MAIN)
        await a.complete(doc, len(str(doc)))
        assert server.rooms.get_key("proj/main:pkg/helpers.py") is None  # nobody opened it
        assert server.rooms.get_key("proj/main:notes/zoo.txt") is None
        context = backend.prompts[-1].rendered.context
        paths = [c.path for c in context]
        assert paths[0] == "pkg/helpers.py" and "notes/zoo.txt" in paths  # ranked above
        assert context[0].text == PROJECT["pkg/helpers.py"]  # the branch head's text
        async with Client(server.url, user="bob") as b:  # a live document wins over git
            helpers = await b.open("proj/main:pkg/helpers.py")
            helpers.insert(0, "# live\n")
            await b.flush()
            await b.complete(await b.open(MAIN), 0)
        assert backend.prompts[-1].rendered.context[0].text.startswith("# live\ndef scale")


async def test_files_whose_names_are_not_utf8_are_context_under_names_of_their_own(
    make_server: Any, code_repos: Path, tmp_path: Path
) -> None:
    """``caf\\xe9.txt`` and ``caf\\xe8.txt`` (latin-1 names) are two files of the context,
    named with their bytes written ``\\xNN`` as ``branch.files`` names them; both used to be
    named alike (U+FFFD for the byte)."""
    work = tmp_path / "work"
    git(tmp_path, "clone", "-q", str(code_repos / "demo"), str(work))
    for byte, word in ((b"\xe9", "espresso"), (b"\xe8", "latte")):
        (work / os.fsdecode(b"caf" + byte + b".txt")).write_text(f"{word}\n")
    git(work, "add", "-A")
    git(work, "commit", "-qm", "latin-1 names")
    git(work, "push", "-q", "origin", "HEAD:refs/heads/latin")
    backend = FakeBackend()
    async with make_server(backend) as server, Client(server.url, user="alice") as a:
        doc = await a.open("demo/latin:src/app.py")
        await a.complete(doc, len(str(doc)))
    context = {c.path: c.text for c in backend.prompts[-1].rendered.context}
    assert context["caf\\xe9.txt"] == "espresso\n" and context["caf\\xe8.txt"] == "latte\n"


async def test_a_typists_context_is_kept_between_requests(make_server: Any) -> None:
    backend = FakeBackend()
    async with make_server(backend) as server, Client(server.url, user="alice") as a:
        util = await a.open("demo/main:src/util.py")
        app = await a.open("demo/main:src/app.py")
        await a.complete(app, 0)
        util.insert(0, "# changed\n")  # another file changes between two keystrokes...
        await a.flush()
        app.insert(0, "x")
        await a.flush()
        await a.complete(app, 1)
        first, second = (p.rendered for p in backend.prompts[-2:])
        assert first.context == second.context  # ...the prompt's head stays the same
        server.completion.context.ttl = 0.0  # (it is refreshed every ttl seconds)
        app.insert(0, "y")
        await a.flush()
        await a.complete(app, 1)
        util_now = {c.path: c.text for c in backend.prompts[-1].rendered.context}
        assert util_now["src/util.py"].startswith("# changed\n")


def test_imports_of_several_languages() -> None:
    paths = [
        "src/app.py",
        "src/util.py",
        "src/pkg/__init__.py",
        "src/pkg/mod.py",
        "web/shared.ts",
        "web/icons.json",
        "web/App.svelte",
        "crates/net/src/lib.rs",
        "crates/net/src/tcp.rs",
        "README.md",
    ]
    python = "import os\nfrom . import util\nfrom .pkg import mod\n"
    assert imported_paths("src/app.py", python, paths) == {
        "src/util.py",
        "src/pkg/__init__.py",
        "src/pkg/mod.py",
    }
    svelte = "<script>\nimport { X } from './shared';\nimport icons from \"./icons.json\"\n"
    assert imported_paths("web/App.svelte", svelte, paths) == {"web/shared.ts", "web/icons.json"}
    assert imported_paths("crates/net/src/lib.rs", "mod tcp;\n", paths) == {"crates/net/src/tcp.rs"}


def test_ranking_imports_then_recent_edits_then_names_then_folders() -> None:
    now = time.monotonic()
    files = {
        "a/zoo.py": Candidate("a/zoo.py", b"1"),
        "b/helpers.py": Candidate("b/helpers.py", b"2"),
        "a/edited.py": Candidate("a/edited.py", b"3", edited=now - 1),
        "c/test_main.py": Candidate("c/test_main.py", b"4"),
        "a/near.py": Candidate("a/near.py", b"5"),
        "a/main.py": Candidate("a/main.py", b"6"),
    }
    ranked = [c.path for c in rank("a/main.py", "from b import helpers\n", files, now)]
    assert ranked == ["b/helpers.py", "a/edited.py", "c/test_main.py", "a/near.py", "a/zoo.py"]


def test_the_prompt_head_stays_put_while_the_typist_types() -> None:
    """Typing at the end of a long prefix changes only the end of the prompt: the other files
    and the prefix's start are the same, so the last prompt's cache keeps matching."""
    text = "".join(f"value_{i} = compute({i})\n" for i in range(3000))
    context = (ContextFile("src/lib.py", "def compute(x):\n    return x\n" * 50),)
    changed = 0
    last = None
    for cursor in range(40_000, 41_000, 9):  # a pause every few keystrokes
        prefix, suffix = window(text, cursor, 2048)
        parts = PromptParts("demo", "src/app.py", prefix, suffix, context)
        rendered = render(Family.QWEN_CODER, parts, 2048, approx_tokens, single_line=True)
        head = rendered.text[: rendered.text.index("<|fim_prefix|>") + 40]
        if last is not None and head != last:
            changed += 1
        last = head
        assert approx_tokens(rendered.text) <= 2048
    assert changed <= 6  # of 111 requests


def test_a_cursor_moved_back_keeps_the_prefix_start() -> None:
    """A typist who moves back up the file after typing gets a prompt whose prefix starts
    where the last one did (so all of it up to the new cursor is in the prompt cache)."""
    text = "".join(f"value_{i} = compute({i})\n" for i in range(3000))
    heads = []
    server, worker = Starts(), Starts()
    for cursor in (50_000, 49_000, 48_200):
        prefix, suffix = window(text, cursor, 2048, server, "alice")
        parts = PromptParts("demo", "src/app.py", prefix, suffix, (), cursor - len(prefix))
        rendered = render(
            Family.QWEN_CODER, parts, 2048, single_line=True, starts=worker, key="alice"
        )
        heads.append(rendered.prefix[:40])
    assert heads[0] == heads[1] == heads[2]
    prefix, suffix = window(text, 48_200, 2048)
    parts = PromptParts("demo", "src/app.py", prefix, suffix, (), 48_200 - len(prefix))
    stateless = render(Family.QWEN_CODER, parts, 2048, single_line=True)
    assert stateless.prefix[:40] != heads[0]  # without the starts kept it would have moved


def test_drift_counts_what_changed_in_the_part_taken() -> None:
    whole = "".join(f"line {i}\n" for i in range(100))
    taken = whole[:200]
    assert drift(taken, whole, len(whole)) == 0
    assert drift(taken, whole[:500] + "tail edit" + whole[500:], len(whole)) == 0  # past it
    assert drift(taken, "x" + whole, len(whole)) == 1  # one character typed at the start
    edited = whole[:50] + "0123456789" + whole[60:]
    assert drift(taken, edited, len(whole)) == 10
    assert drift(taken, "something else entirely\n" * 20, len(whole)) > 150
    both = whole[:50] + "01234" + whole[50:400] + "y" * 300 + whole[400:]
    assert drift(taken, both, len(whole)) == 5  # five inside it, more past it
    cut = whole[:50] + whole[60:400] + whole[700:]
    assert drift(taken, cut, len(whole)) == 10  # ten deleted inside it, more past it


async def test_a_typists_context_is_taken_again_once_it_drifted_a_lot(make_server: Any) -> None:
    backend = FakeBackend()
    async with make_server(backend) as server, Client(server.url, user="alice") as a:
        util = await a.open("demo/main:src/util.py")
        app = await a.open("demo/main:src/app.py")
        await a.complete(app, 0)
        for n in range(3):  # small edits elsewhere leave the head alone
            util.insert(0, f"# {n}\n")
            app.insert(0, "x")
            await a.flush()
            await a.complete(app, 1)
        contexts = [p.rendered.context for p in backend.prompts]
        assert len(contexts) == 4 and all(c == contexts[0] for c in contexts)
        util.insert(0, "".join(f"# rewritten {n}\n" for n in range(40)))  # a lot changed
        app.insert(0, "x")
        await a.flush()
        await a.complete(app, 1)
        assert backend.prompts[-1].rendered.context == contexts[0]  # held for 30 s...
        server.completion.context.hold = 0.0  # ...(as if they had passed)
        app.insert(0, "x")
        await a.flush()
        await a.complete(app, 1)
        latest = {c.path: c.text for c in backend.prompts[-1].rendered.context}
        assert latest["src/util.py"].startswith("# rewritten 0\n")
