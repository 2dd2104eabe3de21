"""Committing what has no live edits (binary and large files, deletions) on the branch: the
changes of the next moment are gathered into one commit and pushed through the git bridge."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from .checkout import Checkout, FileMoved

__all__ = ["ANY", "GATHER", "Pushes"]

GATHER = 0.05
"""Seconds that changes gather before one commit and push."""


ANY = object()
"""Whatever a file holds at the server: a change made without reading it (a deletion)."""


class Pushes:
    """``await pushes.commit(path, data)`` returns once ``data`` (``None``: a deletion) is on
    the branch at the server; ``on_pushed`` is given each new head first. With ``expected``
    (the blob the change was made from, ``None``: no file), it raises :class:`FileMoved`
    instead if the file has another at the server by then; the other files go on."""

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
        self._expected: dict[str, str | None] = {}
        self._waiters: list[tuple[str, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> bool:
        return bool(self._batch)

    async def commit(self, path: str, data: bytes | None, expected: object = ANY) -> None:
        self._batch[path] = data
        if expected is ANY:
            self._expected.pop(path, None)
        else:
            assert expected is None or isinstance(expected, str)
            self._expected[path] = expected
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((path, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        await future

    async def _run(self) -> None:
        while self._batch:
            await asyncio.sleep(self.gather)
            batch, self._batch = self._batch, {}
            expected, self._expected = self._expected, {}
            waiters, self._waiters = self._waiters, []
            while batch:
                files = sorted(batch)
                message = f"collab sync: {len(files)} file(s) from {self.label}\n\n" + "\n".join(
                    files[:50]
                )
                try:
                    head = await self.checkout.commit_and_push(batch, message, expected)
                    self.count += 1
                    await self.on_pushed(head)
                except FileMoved as moved:  # those are read again; the others go on
                    _settle([f for path, f in waiters if path in moved.paths], moved)
                    batch = {p: data for p, data in batch.items() if p not in moved.paths}
                    expected = {p: sha for p, sha in expected.items() if p not in moved.paths}
                    waiters = [(p, f) for p, f in waiters if p not in moved.paths]
                    continue
                except Exception as exc:
                    _settle([f for _path, f in waiters], exc)
                    break
                _settle([f for _path, f in waiters], None)
                break


def _settle(futures: list[asyncio.Future[None]], exc: BaseException | None) -> None:
    for future in futures:
        if not future.done():
            if exc is None:
                future.set_result(None)
            else:
                future.set_exception(exc)
