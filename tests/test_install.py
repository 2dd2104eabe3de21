"""The default install: the embedded server imports nothing beyond ``pip install collab-engine``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

SCRIPT = r"""
import sys

AT_START = set(sys.modules)  # the interpreter's own, and what .pth files of the venv load

import asyncio, json, pathlib

import collab.cli  # the command `collab serve` runs, with all it imports
from collab import Client, CollabServer, ServerConfig
from gitsync import create_demo_repo


async def main(root):
    create_demo_repo(root / "repos" / "demo", {"src/app.py": "def one():\n    return 1\n"})
    config = ServerConfig(repos=root / "repos", data_dir=root / "data", port=0)
    assert config.completion_backend == "local", config.completion_backend
    async with CollabServer(config) as server, Client(server.url, user="alice") as client:
        doc = await client.open("demo/main:src/app.py")
        doc.insert(len(str(doc)), "\ndef two():\n    ret")
        await client.flush()
        await client.complete(doc, len(str(doc)))  # the embedded local backend answers


asyncio.run(main(pathlib.Path(sys.argv[1])))
print(json.dumps(sorted({name.partition(".")[0] for name in set(sys.modules) - AT_START})))
"""

OURS = {"collab", "gitsync", "protocol"}


def _default_closure() -> set[str]:
    """The distributions ``pip install collab-engine`` installs (no extras), normalised."""
    seen: set[str] = set()
    todo = ["collab-engine"]
    while todo:
        name = todo.pop()
        key = name.lower().replace("_", "-")
        if key in seen:
            continue
        seen.add(key)
        for line in metadata.requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return seen


def test_the_embedded_default_needs_only_the_default_install(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parents[1],
    )
    assert result.returncode == 0, result.stderr
    modules = set(json.loads(result.stdout.splitlines()[-1]))
    assert "torch" not in modules
    assert "transformers" not in modules
    installed = _default_closure()
    assert "torch" not in installed and "transformers" not in installed
    owners = metadata.packages_distributions()
    foreign = {
        module: owners[module]
        for module in modules - OURS - set(sys.stdlib_module_names)
        if module in owners
        and not any(dist.lower().replace("_", "-") in installed for dist in owners[module])
    }
    assert not foreign, f"imported from outside the default install: {foreign}"


def test_building_the_package_prints_no_deprecation(tmp_path: Path) -> None:
    """``project.license`` is an SPDX expression: setuptools printed its deprecation of the
    TOML table form, a screenful, on every install."""
    root = Path(__file__).parents[1]
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, source / name)
    for package in OURS:
        shutil.copytree(
            root / package, source / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            "out",
            ".",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=source,
    )
    assert done.returncode == 0, done.stderr
    assert "deprecat" not in (done.stdout + done.stderr).lower(), done.stderr
    (wheel,) = (source / "out").glob("collab_engine-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        assert "License-Expression: MIT" in archive.read(name).decode().splitlines()
        packed = set(archive.namelist())
    sources = {
        path.relative_to(root).as_posix()
        for package in OURS
        for path in (root / package).rglob("*")
        if path.suffix == ".py" or path.name == "py.typed"
    }
    assert not sources - packed, f"missing from the wheel: {sorted(sources - packed)}"
