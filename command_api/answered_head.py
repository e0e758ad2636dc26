"""The log's answered head, recorded in Redis before any answer names a position above it.

The query API refuses a ``min_position`` above this head at once (``query_api.consistency``):
no command answered it, so a wait could never end well and would only cost the server its
read wait. One writer records the highest head asked for, so batches committing together share
one Redis write, and a batch's answers wait for a write covering their positions.

A write must not fail or stall on its read-side token: when Redis does not take the head in
time, the answers go out anyway, and until Redis takes one again the answers do not wait for it
at all (a stalled Redis costs one timeout, not one per batch). A reader holding such an answer
may meanwhile be told its position is beyond the head, until a higher head is recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

import structlog
from prometheus_client import Counter

from command_api.work import Accepted, BatchRunner, Outcome, WorkItem
from kernel.redis_client import redis_away

log = structlog.get_logger(__name__)

UNRECORDED = Counter(
    "tally_answered_head_unrecorded_total",
    "Batches answered before Redis took their head (it was slow or away)",
)
RETRY_SECONDS = 0.5


class HeadRecorder:
    """Records the highest position answered, through ``publish`` (a Redis write)."""

    def __init__(self, publish: Callable[[int], Awaitable[object]], timeout: float) -> None:
        self._publish = publish
        self._timeout = timeout
        self._wanted = 0
        self._recorded = 0
        self._healthy = True  # False from a failed write until the next one that succeeds
        self._changed = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None

    async def record(self, head: int) -> None:
        """Return once ``head`` is recorded, or at once while Redis is failing."""
        if head <= self._recorded:
            return
        self._wanted = max(self._wanted, head)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name="answered-head")
        if not self._healthy:
            UNRECORDED.inc()
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._timeout):
                while self._recorded < head and self._healthy:
                    self._changed.clear()
                    await self._changed.wait()
        if self._recorded < head:
            UNRECORDED.inc()

    async def stop(self) -> None:
        """Stop the writer (what it had not written yet stays unrecorded)."""
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer

    async def _write(self) -> None:
        while self._recorded < self._wanted:
            target = self._wanted
            try:
                await asyncio.wait_for(self._publish(target), self._timeout)
            except Exception as exc:
                if not (redis_away(exc) or isinstance(exc, TimeoutError)):
                    log.exception("head_not_recorded", head=target)
                elif self._healthy:
                    log.warning("head_not_recorded", head=target, error=repr(exc))
                self._healthy = False
                self._changed.set()
                await asyncio.sleep(RETRY_SECONDS)
                continue
            if not self._healthy:
                log.info("head_recorded_again", head=target)
            self._recorded, self._healthy = max(self._recorded, target), True
            self._changed.set()


def recording_head(run: BatchRunner, recorder: HeadRecorder) -> BatchRunner:
    """``run``, recording the highest position its outcomes answer with before returning."""

    async def run_and_record(items: Sequence[WorkItem]) -> list[Outcome]:
        outcomes = await run(items)
        head = max((o.position for o in outcomes if isinstance(o, Accepted)), default=0)
        if head:
            await recorder.record(head)
        return outcomes

    return run_and_record
