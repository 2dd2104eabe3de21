"""The repository event stream: who is on which branch and file, commits, branch moves.

Subscribers register per repository and get plain dicts (msgpack- and JSON-encodable):

- ``{"kind": "presence", "user", "branch", "path", "action": "join" | "leave"}``
- ``{"kind": "commit", "branch", "commit", "parents", "authors", "files"}``
- ``{"kind": "ref", "branch", "old", "new", "cause": "push" | "merge" | "fork" |
  "create" | "delete" | "external"}``; a merge's also has ``"renamed"``: the files it renamed,
  old path -> new path; an external move to a commit that does not descend from
  the old one (a force push, a reset) adds ``"rewound": true`` and ``"rescued"``: the branch
  that keeps live text which did not merge onto the new head, or None; a push's that
  dropped commits of other people's typing has ``"rescued"``: the branch that keeps them
- ``{"kind": "rescued", "branch", "path", "into", "commit"}``: that live text of ``path`` was
  committed on branch ``into`` before the document was made to read as the rewritten branch
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

__all__ = ["EventHub", "Listener"]

log = logging.getLogger("collab.events")

Listener = Callable[[str, dict[str, Any]], None]
"""Called with the repository name and the event."""


class EventHub:
    """Delivers each event to the subscribers of its repository, synchronously."""

    def __init__(self) -> None:
        self._listeners: dict[str, list[Listener]] = {}
        self.forward: Listener | None = None
        """In a cluster: sends each event published here to the other nodes."""

    def subscribe(self, repo: str, listener: Listener) -> Callable[[], None]:
        """Add ``listener`` for ``repo``; returns the function that removes it."""
        self._listeners.setdefault(repo, []).append(listener)

        def unsubscribe() -> None:
            listeners = self._listeners.get(repo, [])
            if listener in listeners:
                listeners.remove(listener)
            if not listeners:
                self._listeners.pop(repo, None)

        return unsubscribe

    def publish(self, repo: str, event: dict[str, Any]) -> None:
        """Deliver ``event`` here, and hand it to ``forward`` (the other nodes of a cluster)."""
        self.deliver(repo, event)
        if self.forward is not None:
            self.forward(repo, event)

    def deliver(self, repo: str, event: dict[str, Any]) -> None:
        """Deliver ``event`` to this process's subscribers only (another node published it)."""
        for listener in list(self._listeners.get(repo, ())):
            try:
                listener(repo, event)
            except Exception:
                log.exception("event listener failed")


def hexsha(sha: bytes | None) -> str | None:
    return sha.decode("ascii") if sha is not None else None
