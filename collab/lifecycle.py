"""``Lifecycle``: a part with a lifetime, usable as ``async with part:``.

Stores, the server and the working trees are started and stopped explicitly by whoever
owns them (the composition root starts them in order); tests and scripts that own one
outright use ``async with``, which must stop it whatever happens inside. The two ways are
one: entering starts the part, leaving stops it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self

__all__ = ["Lifecycle"]


class Lifecycle(ABC):
    """``start`` and ``stop``, and ``async with`` calling them."""

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def stop(self) -> None: ...

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
