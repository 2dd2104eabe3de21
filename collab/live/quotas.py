"""Per-user quotas on live edits: updates and bytes per second, over all of a user's
connections, so that no one client can flood a room, the store or the other peers."""

from __future__ import annotations

from protocol.errors import ErrorCode, ProtocolError

from .rate_limit import RateLimiter

__all__ = ["UserQuotas"]


class UserQuotas:
    """Two token buckets per user: one update each, one token per byte. A rate of 0 turns a
    bucket off."""

    def __init__(
        self, *, update_rate: float, update_burst: int, byte_rate: float, byte_burst: int
    ) -> None:
        self.updates = RateLimiter(update_rate, update_burst)
        self.bytes = RateLimiter(byte_rate, byte_burst)

    def charge(self, user: str, size: int) -> None:
        """Count one update of ``size`` bytes from ``user``; raise ``RATE_LIMITED`` (and count
        nothing of it) when it is over either quota."""
        if not self.bytes.allow(user, cost=float(size)):
            raise ProtocolError(
                ErrorCode.RATE_LIMITED,
                f"over the quota of {self.bytes.rate:.0f} update bytes per second",
            )
        if not self.updates.allow(user):
            self.bytes.refund(user, float(size))
            raise ProtocolError(
                ErrorCode.RATE_LIMITED,
                f"over the quota of {self.updates.rate:.0f} updates per second",
            )
