"""Committing what has no live edits (binary and large files, deletions) on the branch: the
changes of the next moment are gathered into one commit and pushed through the git bridge."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from .checkout import Checkout

__all__ = ["GATHER", "Pushes"]

GATHER = 0.05
"""Seconds that changes gather before one commit and push."""


class Pushes:
    """``await pushes.commit(path, data)`` returns once ``data`` (``None``: a deletion) is on
    the branch at the server; ``on_pushed`` is given each new head first."""

    def __init__(
        self,
        checkout: Checkout,
        label: str,
        on_pushed: Callable[[str], Awaitable[None]],
        *,
        gather: float = GATHER,
    ) -> None:
        self.checkout = checkout
        self.label = label
        self.on_pushed = on_pushed
        self.gather = gather
        self.count = 0  # commits pushed
        self._batch: dict[str, bytes | None] = {}
        self._waiters: list[asyncio.Future[None]] = []
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> bool:
        return bool(self._batch)

    async def commit(self, path: str, data: bytes | None) -> None:
        self._batch[path] = data
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        await future

    async def _run(self) -> None:
        while self._batch:
            await asyncio.sleep(self.gather)
            batch, self._batch = self._batch, {}
            waiters, self._waiters = self._waiters, []
            files = sorted(batch)
            message = f"collab sync: {len(files)} file(s) from {self.label}\n\n" + "\n".join(
                files[:50]
            )
            try:
                head = await self.checkout.commit_and_push(batch, message)
                self.count += 1
                await self.on_pushed(head)
            except Exception as exc:
                for future in waiters:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for future in waiters:
                if not future.done():
                    future.set_result(None)
