"""Search read-your-writes: make what was indexed before a moment visible to ``_search``.

The search engine is near-real-time: a document the projector wrote is returned by
``get``/``mget`` at once, but by ``_search`` only after the index's next refresh (every second
by default). A search with ``min_position`` first waits until the comments projection's
low-water mark reaches that position (the document is written), then for a refresh that
*started* after that moment. Refreshes are shared: one runs at a time, at most one per
``min_interval``, and every reader that arrived before it started is served by it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class Refresher:
    """Coalesced refreshes of one index."""

    def __init__(
        self,
        refresh: Callable[[], Awaitable[object]],
        min_interval: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._refresh = refresh
        self._min_interval = min_interval
        self._clock = clock
        self._covered = float("-inf")  # the start of the last refresh that finished
        self._started = float("-inf")
        self._running: asyncio.Future[None] | None = None
        self.refreshes = 0  # how many were sent (for tests and metrics)

    async def covering(self, since: float) -> None:
        """Return once a refresh that started at or after ``since`` (a ``clock`` reading) has
        finished; its error, if it failed."""
        while self._covered < since:
            if self._running is None:
                self._running = asyncio.ensure_future(self._refresh_in_turn())
            await asyncio.shield(self._running)

    async def _refresh_in_turn(self) -> None:
        try:
            wait = self._started + self._min_interval - self._clock()
            if wait > 0:
                await asyncio.sleep(wait)
            started = self._clock()
            self._started = started
            self.refreshes += 1
            await self._refresh()
            self._covered = started
        finally:
            self._running = None
