"""Per-user quotas on live edits: updates and bytes per second, over all of a user's
connections, so that no one client can flood a room, the store or the other peers; and
awareness bytes per second (states sent, and the tables queries are answered with); and the
bytes of the documents sent in answer to a sync step 1, a few bytes that any reader may send
again and again, each answered with a whole document."""

from __future__ import annotations

from protocol.errors import ErrorCode, ProtocolError

from .rate_limit import RateLimiter

__all__ = ["UserQuotas"]


class UserQuotas:
    """Token buckets per user: one update each, one token per update byte, and one per
    awareness byte (every state is relayed to every peer of its document: a small budget
    keeps one client from filling its peers' send queues). A rate of 0 turns a bucket off."""

    def __init__(
        self,
        *,
        update_rate: float,
        update_burst: int,
        byte_rate: float,
        byte_burst: int,
        awareness_rate: float = 0.0,
        awareness_burst: int = 0,
        answer_rate: float = 0.0,
        answer_burst: int = 0,
    ) -> None:
        self.updates = RateLimiter(update_rate, update_burst)
        self.bytes = RateLimiter(byte_rate, byte_burst)
        self.awareness = RateLimiter(awareness_rate, awareness_burst)
        self.answers = RateLimiter(answer_rate, answer_burst)

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

    def charge_awareness(self, user: str, size: int) -> None:
        """Count ``size`` bytes of awareness from ``user``: a state sent, or the table sent
        back to its query. Raise ``RATE_LIMITED`` (counting nothing) when it is over."""
        if not _allow_capped(self.awareness, user, size):
            raise ProtocolError(
                ErrorCode.RATE_LIMITED,
                f"over the quota of {self.awareness.rate:.0f} awareness bytes per second",
            )

    def charge_answer(self, user: str, size: int) -> None:
        """Count ``size`` bytes of a document sent to ``user`` in answer to its sync step 1.
        Raise ``RATE_LIMITED`` (counting nothing) when it is over."""
        if not _allow_capped(self.answers, user, size):
            raise ProtocolError(
                ErrorCode.RATE_LIMITED,
                f"over the quota of {self.answers.rate:.0f} bytes per second of documents "
                "sent in answer to sync step 1",
            )


def _allow_capped(bucket: RateLimiter, user: str, size: int) -> bool:
    """Take ``size`` from ``user``'s ``bucket``, at most its burst (one large message still
    goes out, once the bucket is full); whether it was there to take."""
    return bucket.allow(user, cost=float(min(size, bucket.burst)))
