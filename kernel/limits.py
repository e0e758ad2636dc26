"""Rate limits: the quota a check leaves (``RateLimit-*`` headers), and buckets kept in memory.

Every limit is GCRA, a token bucket kept as one "theoretical arrival time" per key: ``limit``
requests per ``window_seconds``, bursts up to ``limit``, refilled smoothly. ``LocalBuckets``
keeps them in this process: for tiers that must never wait on a store (anonymous reads, the
address and global tiers), and as the write limiter's fallback while Redis does not answer, so
the limits never switch off.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import msgspec

MAX_KEYS = 200_000  # then expired buckets are dropped (a full bucket holds no state)


class Limit(msgspec.Struct, frozen=True):
    """``limit`` requests per ``window_seconds`` (0: no limit)."""

    limit: int
    window_seconds: float


class Quota(msgspec.Struct, frozen=True):
    """Where a client stands after a check: the IETF ``RateLimit-*`` header values."""

    limit: int
    remaining: int
    reset_seconds: int  # until the bucket is full again
    retry_after: int = 0  # when refused: seconds until one request is allowed

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_seconds),
        }


class LocalBuckets:
    """GCRA buckets in this process's memory, by key."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._due: dict[str, float] = {}

    def take(self, key: str, limit: Limit, cost: int = 1) -> Quota:
        """Count ``cost`` requests against ``key``'s bucket (a negative cost refunds)."""
        now = self._clock()
        window = limit.window_seconds
        interval = window / limit.limit
        due = max(self._due.get(key, now), now)
        new = due + cost * interval
        if cost > 0 and new - now > window:
            wait = new - window - now
            return Quota(limit.limit, 0, math.ceil(due - now), max(1, math.ceil(wait)))
        if len(self._due) >= MAX_KEYS:
            self._due = {k: v for k, v in self._due.items() if v > now}
        if new > now:
            self._due[key] = new
        else:
            self._due.pop(key, None)
        remaining = math.floor((window - (new - now)) / interval)
        return Quota(limit.limit, max(0, remaining), math.ceil(max(0.0, new - now)))
