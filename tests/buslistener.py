"""A bus listener for the tests: it records everything its bus delivers."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Heard"]


@dataclass
class Heard:
    """A listener that records what its bus delivers."""

    updates: dict[str, list[tuple[int, bytes]]] = field(default_factory=dict)
    gaps: list[tuple[str, int]] = field(default_factory=list)
    awareness: list[tuple[str, str, bytes]] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    def bus_updates(self, doc_id: str, updates: list[tuple[int, bytes]]) -> None:
        self.updates.setdefault(doc_id, []).extend(updates)

    def bus_gap(self, doc_id: str, after: int) -> None:
        self.gaps.append((doc_id, after))

    def bus_deleted(self, doc_id: str) -> None:
        self.deleted.append(doc_id)

    def bus_awareness(self, doc_id: str, node_id: str, payload: bytes) -> None:
        self.awareness.append((doc_id, node_id, payload))

    def bus_node_gone(self, node_id: str) -> None:
        self.gone.append(node_id)
