"""The documentation holds up: its links lead somewhere in the repository, the architecture
page names every module, the operations page lists every option of ``collab serve`` with its
default, and its backup and restore recipe gives back a working server."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from pathlib import Path

import pytest
from gitcli import git, show
from serverproc import ServerProcess

from collab import Client
from collab.cli.commands import _parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "protocol/README.md"]
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
PACKAGES = ("protocol", "gitsync", "collab")


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors for the headings of ``page``."""
    anchors = set()
    text = FENCE.sub("", page.read_text())
    for heading in re.findall(r"^#+ (.+)$", text, re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_stay_in_the_repository_and_lead_somewhere(page: Path) -> None:
    text = FENCE.sub("", page.read_text())
    assert "../shared" not in text
    for target in LINK.findall(text):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.is_relative_to(ROOT), f"{page.name}: {target} leaves the repository"
        assert resolved.exists(), f"{page.name}: {target} does not exist"
        if anchor and resolved.suffix == ".md":
            assert anchor in _anchors(resolved), f"{page.name}: no heading for {target}"


def test_the_architecture_page_names_every_module() -> None:
    page = (ROOT / "docs" / "architecture.md").read_text()
    missing = [
        str(path.relative_to(ROOT))
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if path.name not in ("__init__.py", "__main__.py") and f"`{path.name}`" not in page
    ]
    assert not missing, f"docs/architecture.md does not name {missing}"


def test_the_operations_page_lists_every_serve_option_with_its_default() -> None:
    page = (ROOT / "docs" / "operations.md").read_text()
    rows = {
        match.group(1): match.group(2)
        for match in re.finditer(r"^\| `(--[a-z-]+)[^`]*` \| ([^|]*) \|", page, re.MULTILINE)
    }
    serve = _parser()._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr]
    for action in serve._actions:
        if not action.option_strings or action.dest == "help":
            continue
        option = action.option_strings[0]
        assert option in rows, f"docs/operations.md does not list {option}"
        if action.nargs == 0:  # a flag: off unless given
            assert "off" in rows[option], (option, rows[option])
        elif action.default not in (None, frozenset()) and option not in (
            "--group-window",
            "--sync-window",
        ):
            assert f"`{action.default}`" in rows[option], (option, action.default, rows[option])


def _block_under(page: Path, heading: str, number: int) -> str:
    section = page.read_text().split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return [body for language, body in FENCE.findall(section) if language == "sh"][number]


async def test_the_backup_recipe_restores_a_working_server(repos: Path, tmp_path: Path) -> None:
    """Back up a running server as docs/operations.md says, with edits committed and edits
    only in the store, restore into new directories, and start a server there."""
    page = ROOT / "docs" / "operations.md"
    backup, restore = _block_under(page, "Backups", 0), _block_under(page, "Backups", 1)
    data = tmp_path / "data"
    server = ServerProcess(
        repos, data, extra_args=("--commit-idle", "30", "--commit-max-lag", "60")
    )
    await server.start()
    try:
        async with Client(server.url, user="alice") as alice:
            doc = await alice.open("demo/main:README.md")
            doc.insert(0, "committed\n")
            await alice.flush()
            committed = await alice.commit("demo", "main")
            doc.insert(0, "only in the store\n")
            await alice.flush()
            expected = str(doc.text)
            here = {"/var/lib/collab": str(data), "/srv/git": str(repos), "/backup": str(tmp_path)}
            script = backup
            for path, local in here.items():
                script = script.replace(path, local)
            await asyncio.to_thread(_bash, script, {}, tmp_path)
    finally:
        await server.stop()
    (saved,) = tmp_path.glob("collab-*")
    restored_data, restored_repos = tmp_path / "restored-data", tmp_path / "restored-repos"
    env = {"DATA": str(restored_data), "REPOS": str(restored_repos), "BACKUP": str(saved)}
    await asyncio.to_thread(_bash, restore, env, tmp_path)
    restored_demo = restored_repos / "demo.git"
    assert git(restored_demo, "rev-parse", "main").strip() == committed
    second = ServerProcess(restored_repos, restored_data, extra_args=("--commit-idle", "0.1"))
    await second.start()
    try:
        async with Client(second.url, user="bob") as bob:
            doc = await bob.open("demo/main:README.md")
            assert str(doc.text) == expected  # the store's edits, once, after the commit's
    finally:
        await second.stop()
    assert show(restored_demo, "main", "README.md") == expected  # committed at start


def _bash(script: str, env: dict[str, str], cwd: Path) -> None:
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


def test_the_logger_names_the_operations_page_shows_are_the_codes() -> None:
    """A log shipper filters on the logger names the page gives: each is a logger of the
    code (the module paths moved; the logger names stay)."""
    page = (ROOT / "docs" / "operations.md").read_text()
    shown = set(re.findall(r'"logger": "([\w.]+)"', page))
    shown |= set(
        re.findall(r"`((?:collab|gitsync)\.[\w.]+)`", page.split("`logger` the", 1)[1][:200])
    )
    assert len(shown) >= 3, shown
    made = {
        name
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        for name in re.findall(r'getLogger\("([\w.]+)"\)', path.read_text())
    }
    assert not shown - made, f"docs/operations.md names loggers the code lacks: {shown - made}"
