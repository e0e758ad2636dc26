"""A cache bounded in bytes, not entries: what a client can make a process keep is capped.

Entries expire at a time given with each; the oldest are evicted first when a new one would
pass the limit. A count bound would let large entries (long pages, large bodies) add up to
hundreds of megabytes per worker.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class BoundedCache(Generic[K, V]):
    """``put(key, value, size, expires)``; ``get(key, now)`` while unexpired."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._entries: dict[K, tuple[float, V, int]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K, now: float) -> V | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] <= now:
            return None
        return entry[1]

    def put(self, key: K, value: V, size: int, expires: float) -> None:
        """Keep ``value`` (of about ``size`` bytes) until ``expires``; one larger than the whole
        cache is not kept."""
        self.pop(key)
        if size > self.max_bytes:
            return
        while self.size + size > self.max_bytes and self._entries:
            self.pop(next(iter(self._entries)))  # the oldest
        self._entries[key] = (expires, value, size)
        self.size += size

    def pop(self, key: K) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.size -= entry[2]

    def sweep(self, now: float, keep: Callable[[K], bool] = lambda _: False) -> None:
        """Drop every expired entry (unless ``keep`` says otherwise)."""
        for key in [k for k, (t, _, _) in self._entries.items() if t <= now and not keep(k)]:
            self.pop(key)
