"""Completion figures: counts, acceptance rate and latency percentiles over recent requests."""

from __future__ import annotations

import collections
import math
from collections import Counter
from typing import Any

__all__ = ["CompletionMetrics", "percentile"]

PARTS = ("queue", "prompt", "model", "total")


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0 to 1) of ``values`` by nearest rank (the ``ceil(q * n)``-th
    smallest, counting from 1); 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = math.ceil(q * len(ordered) - 1e-9)  # 0.9 * 10 is 9.000000000000002
    return ordered[min(len(ordered), max(1, rank)) - 1]


class CompletionMetrics:
    """What the ``complete.metrics`` operation and ``GET /metrics`` (``collab_completion_*``)
    report."""

    def __init__(self, window: int = 4096) -> None:
        self.counts: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.latency: dict[str, collections.deque[float]] = {
            part: collections.deque(maxlen=window) for part in PARTS
        }
        self.latency_sum: dict[str, float] = dict.fromkeys(PARTS, 0.0)
        """Milliseconds of each part over every answered request (the windows keep the last)."""

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] += n

    def error(self, code_name: str) -> None:
        self.errors[code_name] += 1

    def answered(self, latency: dict[str, float], *, shown: bool) -> None:
        """A completion reached its requester; ``shown`` if it had any text."""
        self.counts["answered"] += 1
        if shown:
            self.counts["shown"] += 1
        for part in PARTS:
            value = latency[f"{part}_ms"]
            self.latency[part].append(value)
            self.latency_sum[part] += value

    def snapshot(self) -> dict[str, Any]:
        shown = self.counts["shown"]
        accepted = self.counts["accepted"]
        return {
            "counts": dict(sorted(self.counts.items())),
            "errors": dict(sorted(self.errors.items())),
            "acceptance_rate": round(accepted / shown, 4) if shown else None,
            "latency_ms": {
                part: {
                    "p50": round(percentile(list(values), 0.50), 3),
                    "p90": round(percentile(list(values), 0.90), 3),
                    "p99": round(percentile(list(values), 0.99), 3),
                    "count": len(values),
                }
                for part, values in self.latency.items()
            },
        }
