"""A per-user token bucket: ``rate`` tokens per second, bursts of up to ``burst``."""

from __future__ import annotations

import time

__all__ = ["RateLimiter"]


class RateLimiter:
    def __init__(self, rate: float, burst: int, *, max_users: int = 100_000) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self.max_users = max_users
        self._buckets: dict[str, tuple[float, float]] = {}  # user -> (tokens, at)

    def allow(self, user: str, now: float | None = None, cost: float = 1.0) -> bool:
        """Take ``cost`` tokens from ``user``'s bucket; ``False`` (taking none) when it holds
        fewer."""
        if self.rate <= 0:
            return True
        now = time.monotonic() if now is None else now
        tokens, at = self._buckets.get(user, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        if tokens < cost:
            self._buckets[user] = (tokens, now)
            return False
        if len(self._buckets) >= self.max_users and user not in self._buckets:
            self._prune(now)
        self._buckets[user] = (tokens - cost, now)
        return True

    def refund(self, user: str, cost: float = 1.0) -> None:
        """Put back ``cost`` tokens taken from ``user``'s bucket (for something that was
        refused after all), up to its burst."""
        bucket = self._buckets.get(user)
        if self.rate > 0 and bucket is not None:
            tokens, at = bucket
            self._buckets[user] = (min(float(self.burst), tokens + cost), at)

    def _prune(self, now: float) -> None:
        """Forget users whose buckets have refilled (they start full again anyway)."""
        full = self.burst / self.rate
        self._buckets = {u: b for u, b in self._buckets.items() if now - b[1] < full}
