"""Rebuild a read model whose store lost its data, without an operator.

When a projection finds its store lost what it wrote (``ReadModelLost``, or its ``intact``
marker gone), ``Rebuilder.trigger`` starts ``tally replay`` for it in the background, once at a
time: a new generation or index is filled from the event store beside the live one and switched
to under the fence. Meanwhile reads fall back as when the store is down (the query API checks
the same marker), and the live projector goes on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import structlog
from prometheus_client import Counter, Gauge

from projectors.rebuilds import Rebuild
from projectors.replay import ReplayRunning, replay
from projectors.store_errors import classify

log = structlog.get_logger(__name__)

LOST = Counter(
    "tally_projection_read_model_lost_total",
    "Times a projection found its store had lost its data (each starts a rebuild)",
    ["projection"],
)
REBUILDING = Gauge(
    "tally_projection_rebuilding", "1 while a lost read model is rebuilt", ["projection"]
)


class Rebuilder:
    """Runs at most one automatic rebuild of one projection at a time."""

    def __init__(self, name: str, dsn: str, make_rebuild: Callable[[], Rebuild[Any]]) -> None:
        self.name = name
        self._dsn = dsn
        self._make_rebuild = make_rebuild
        self._task: asyncio.Task[None] | None = None
        self.rebuilt = 0

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def trigger(self) -> None:
        """The store lost its data: rebuild it, unless a rebuild is under way."""
        if self.running:
            return
        LOST.labels(self.name).inc()
        log.error("read_model_lost", projection=self.name, action="rebuilding from the log")
        self._task = asyncio.create_task(self._run(), name=f"rebuild-{self.name}")

    async def _run(self) -> None:
        REBUILDING.labels(self.name).set(1)
        delay = 1.0
        try:
            while True:
                try:
                    result = await replay(self._dsn, self._make_rebuild())
                except ReplayRunning:
                    log.info("rebuild_waits_for_replay", projection=self.name)
                except Exception as exc:
                    if classify(exc) == "bug":
                        log.exception("rebuild_failed", projection=self.name)
                        raise
                    log.warning("rebuild_interrupted", projection=self.name, error=repr(exc))
                else:
                    self.rebuilt += 1
                    log.warning(
                        "read_model_rebuilt",
                        projection=self.name,
                        target=result.target,
                        events=result.events,
                        seconds=round(result.seconds, 1),
                    )
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        finally:
            REBUILDING.labels(self.name).set(0)

    async def close(self) -> None:
        """Stop a rebuild under way (a later start resumes it where it stopped)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
