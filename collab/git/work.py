"""Git work for the event loop: run in the repositories' own threads, so that a stopping
server can wait for all of it before it closes the repositories."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any, TypeVar

from gitsync.repos import Repositories

__all__ = ["in_git_thread", "in_repo"]

T = TypeVar("T")


async def in_git_thread(
    repos: Repositories, fn: Callable[..., T], /, *args: Any, **kwargs: Any
) -> T:
    """``fn(*args, **kwargs)`` run in a thread of ``repos.executor``."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(repos.executor, functools.partial(fn, *args, **kwargs))


async def in_repo(
    repos: Repositories, name: str, fn: Callable[..., T], /, *args: Any, **kwargs: Any
) -> T:
    """``fn(repo, *args, **kwargs)`` with the repository ``name`` opened, both in a thread of
    ``repos.executor``: ``repo`` is that thread's own (see ``Repositories.open``)."""
    return await in_git_thread(repos, lambda: fn(repos.open(name), *args, **kwargs))
