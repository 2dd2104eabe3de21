"""The import graph holds to the design: only the composition root knows the server object,
no package imports in a circle, and the layers import downwards only.

Imports are read from the source with ``ast`` (those under ``if TYPE_CHECKING:`` too: a
circle of types is still a circle), so the checks need no import of the package."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("collab", "gitsync", "protocol")
COMPOSITION_ROOT = "collab.server.app"
MAY_IMPORT_THE_ROOT = ("collab", "collab.server.app", "collab.cli")
"""``collab/__init__.py`` re-exports ``CollabServer``; the CLI builds and runs a server."""


def _module_name(path: Path) -> tuple[str, bool]:
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def _modules() -> dict[str, set[str]]:
    """Each module of the packages, with the modules of the packages it imports."""
    paths = [path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))]
    names = {_module_name(path)[0] for path in paths}
    graph: dict[str, set[str]] = {}
    for path in paths:
        name, is_package = _module_name(path)
        here = name.split(".") if is_package else name.split(".")[:-1]
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here[: len(here) - node.level + 1]
                    module = ".".join([*base, node.module] if node.module else base)
                else:
                    module = node.module or ""
                # ``from package import submodule`` imports the submodule
                targets = [
                    f"{module}.{alias.name}" if f"{module}.{alias.name}" in names else module
                    for alias in node.names
                ]
            else:
                continue
            imported.update(target for target in targets if target in names)
        imported.discard(name)
        graph[name] = imported
    return graph


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_the_graph_is_read_from_every_module() -> None:
    graph = _modules()
    assert COMPOSITION_ROOT in graph
    assert "collab.live.room" in graph["collab.live.rooms"]  # a relative import, resolved
    assert "gitsync.objects.commits" in graph["gitsync"]  # a package re-exporting


def test_only_the_composition_root_and_the_cli_import_the_server() -> None:
    graph = _modules()
    importers = sorted(
        name
        for name, imported in graph.items()
        if COMPOSITION_ROOT in imported
        and not any(_within(name, allowed) for allowed in MAY_IMPORT_THE_ROOT[1:])
        and name != MAY_IMPORT_THE_ROOT[0]
    )
    assert not importers, f"these modules import {COMPOSITION_ROOT}: {importers}"


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of imports in ``graph``, or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        path.append(name)
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (found := visit(target)) is not None:
                return found
        path.pop()
        state[name] = 2
        return None

    for name in sorted(graph):
        if name not in state and (found := visit(name)) is not None:
            return found
    return None


def test_no_module_imports_in_a_circle() -> None:
    graph = _modules()
    # a package's ``__init__`` re-exporting its modules is not a dependency of theirs on it
    found = _cycle(graph)
    assert found is None, "import circle: " + " -> ".join(found or [])


def test_a_circle_is_found_when_there_is_one() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_layers_import_downwards_only() -> None:
    graph = _modules()
    for name, imported in graph.items():
        if _within(name, "protocol"):
            assert not {i for i in imported if not _within(i, "protocol")}, name
        if _within(name, "gitsync"):
            assert not {i for i in imported if _within(i, "collab")}, name
