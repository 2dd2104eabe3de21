"""The typed origin every change carries, so no layer echoes back what another just wrote."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Origin"]


class Origin(StrEnum):
    CLIENT = "client"  # a connected editor
    GIT = "git"  # a ref moved outside the engine (push, another tool)
    DISK = "disk"  # the mirrored working tree changed
    BUS = "bus"  # another server process
    AI = "ai"  # an accepted completion
    SEED = "seed"  # the initial content, from the branch head
