"""Watching a working tree with ``watchfiles``: each changed file's tree path, handed over as
soon as the watcher's short batch ends; a directory moved in or away stands for its files; and
``.git/HEAD``, which a checkout of another branch moves."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

from .files import PathFilter, read_bytes
from .state import SyncState, digest

__all__ = ["changed_on_disk", "watch"]


async def watch(
    root: Path,
    paths: PathFilter,
    known: Callable[[], list[str]],
    changed: Callable[[str], None],
    *,
    step: int,
    stop: asyncio.Event,
    head_moved: Callable[[], None] | None = None,
) -> None:
    """Call ``changed`` with the tree path of every file that changes under ``root`` until
    ``stop`` is set. ``known`` lists the paths synced so far (those of a directory that
    vanishes are reported). A change to a ``.gitignore`` reloads the filter. ``head_moved``
    is called when ``.git/HEAD`` changes."""
    from watchfiles import awatch

    head = str(root / ".git" / "HEAD")

    def interesting(_change: object, name: str) -> bool:
        return name == head or ("/.git/" not in name and not name.endswith("/.git"))

    async for batch in awatch(
        root, watch_filter=interesting, debounce=max(step * 10, 50), step=step, stop_event=stop
    ):
        names = {name for _change, name in batch}
        if head in names:
            names.discard(head)
            if head_moved is not None:
                head_moved()
        found: set[str] = set()
        if any(name.endswith(".gitignore") for name in names):
            paths.reload()  # files it no longer ignores are new to the sync
            found.update(set(await asyncio.to_thread(paths.walk)) - set(known()))
        for name in names:
            found.update(_paths_of(root, paths, known, Path(name)))
        for path in sorted(found):
            changed(path)


def _paths_of(
    root: Path, paths: PathFilter, known: Callable[[], list[str]], full: Path
) -> list[str]:
    if full.is_dir() and not full.is_symlink():  # a directory moved in: its files are new
        found = []
        for folder, dirs, files in os.walk(full):
            dirs[:] = [d for d in dirs if d != ".git"]
            for file in files:
                rel = paths.relative(Path(folder) / file)
                if rel is not None:
                    found.append(rel)
        return found
    rel = paths.relative(full)
    found = [] if rel is None else [rel]
    if full.exists() or full.is_symlink():
        return found
    try:  # gone: a file deleted, or a directory moved away (its files are gone too)
        prefix = full.relative_to(root).as_posix() + "/"
    except ValueError:
        return found
    return found + [path for path in known() if path.startswith(prefix)]


def changed_on_disk(root: Path, paths: PathFilter, state: SyncState) -> set[str]:
    """Files whose content differs from their base, new files, bases whose file is gone, and
    the changes a syncer that died was making."""
    found = set(paths.walk())
    changed = {path for path in state.paths() if path not in found}
    changed.update(state.sent_paths())
    for path in found:
        data = read_bytes(root / path)
        if data is None or state.digest_of(path) != digest(data):
            changed.add(path)
    return changed
