"""Deliver batches to one projection: per-comment order, outages retried, only poison parked.

- A comment with a parked event has its later events parked behind it (``held``), so its events
  apply in order; once its poison is gone (``tally dlq retry``), ``refresh_parked`` drains what
  was held and lets the comment go on.
- A failure is classified (``projectors.store_errors``): outages and back-pressure are retried
  with backoff until the store is back; poison is found one comment at a time and parked; a bug
  is retried a few times and then stops the projector loudly (``ProjectorFailed``).
- ``ReadModelLost`` asks the owner to rebuild (``on_lost``): the rebuild replays the whole log,
  so what the lost store refused is not lost.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog
from prometheus_client import Counter, Gauge
from psycopg_pool import AsyncConnectionPool

from projectors import parking
from projectors.base import CannotApply, Projection, ReadModelLost
from projectors.fence import SwitchFence
from projectors.parking import HELD, DeadLetters, Parked
from projectors.store_errors import classify
from schemas.envelope import Envelope

log = structlog.get_logger(__name__)

APPLIED = Counter("tally_projection_applied_total", "Events applied", ["projection"])
PARKED = Counter("tally_projection_parked_total", "Events parked (DLQ)", ["projection"])
ERRORS = Counter(
    "tally_projection_store_errors_total",
    "Failed applies, by kind (transient: retried; bug: retried, then the projector stops)",
    ["projection", "kind"],
)
RETRYING = Gauge(
    "tally_projection_store_retrying", "1 while a projection waits for its store", ["projection"]
)

BUG_ATTEMPTS = 3


class Stopping(Exception):
    """Asked to stop while waiting for the store."""


class ProjectorFailed(Exception):
    """A failure that is neither an outage nor a poison event kept repeating: a bug."""


class Delivery:
    """Applies batches to ``projection`` under its switch fence."""

    def __init__(
        self,
        projection: Projection,
        pool: AsyncConnectionPool[Any],
        fence: SwitchFence,
        dead_letters: DeadLetters,
        stop: asyncio.Event,
        on_lost: Callable[[], Awaitable[None]],
    ) -> None:
        self.projection = projection
        self.name = projection.name
        self._pool = pool
        self._fence = fence
        self._dead_letters = dead_letters
        self._stop = stop
        self._on_lost = on_lost
        self.parked: set[str] = set()

    async def deliver(self, envelopes: Sequence[Envelope]) -> None:
        """Apply ``envelopes``; park held-back and poison events, keeping per-comment order."""
        if not envelopes:
            return
        ready = envelopes
        if self.parked:  # nearly always empty: then nothing is held back
            held = [e for e in envelopes if str(e.event.comment_id) in self.parked]
            if held:
                await self.park(
                    [Parked(e.position, str(e.event.comment_id), HELD, True) for e in held],
                    [e.correlation_id for e in held],
                )
            ready = [e for e in envelopes if str(e.event.comment_id) not in self.parked]
            if not ready:
                return
        try:
            await self._apply(ready)
        except CannotApply:
            await self._one_comment_at_a_time(ready)
            return
        APPLIED.labels(self.name).inc(len(ready))

    async def park(self, rows: list[Parked], correlation_ids: Sequence[str | None] = ()) -> None:
        """Park ``rows`` (and remember their comments as blocked)."""
        await self._retrying(lambda: self._dead_letters.park(rows))
        self.parked.update(r.comment_id for r in rows)
        PARKED.labels(self.name).inc(len(rows))
        log.error(
            "events_parked",
            projection=self.name,
            positions=[r.position for r in rows],
            error=rows[0].error,
            # The requests that caused them: the id from X-Request-ID, carried in the event.
            correlation_ids=sorted({c for c in correlation_ids if c}),
        )

    async def refresh_parked(self) -> None:
        """Follow the DLQ table: drain comments whose poison was retried away."""
        poisoned, held_only = await parking.blocked(self._pool, self.name)
        if held_only:
            async with self._fence.shared():
                applied, _ = await parking.retry(self._pool, self.projection, held_only)
            log.info("held_events_drained", projection=self.name, applied=applied)
            poisoned, held_only = await parking.blocked(self._pool, self.name)
        self.parked = poisoned | held_only

    async def _one_comment_at_a_time(self, envelopes: Sequence[Envelope]) -> None:
        by_comment: dict[str, list[Envelope]] = defaultdict(list)
        for envelope in envelopes:
            by_comment[str(envelope.event.comment_id)].append(envelope)
        for comment_id, events in by_comment.items():
            for index, envelope in enumerate(events):
                try:
                    await self._apply([envelope])
                except CannotApply as exc:
                    rest = events[index + 1 :]
                    await self.park(
                        [Parked(envelope.position, comment_id, exc.reason)]
                        + [Parked(e.position, comment_id, HELD, True) for e in rest],
                        [e.correlation_id for e in events[index:]],
                    )
                    break
                APPLIED.labels(self.name).inc()

    async def _apply(self, envelopes: Sequence[Envelope]) -> None:
        """Apply under the switch fence; an outage is waited out, a lost store rebuilt."""

        async def attempt() -> None:
            async with self._fence.shared():
                await self.projection.apply(envelopes)

        try:
            await self._retrying(attempt)
        except ReadModelLost as exc:
            log.debug("read_model_lost", projection=self.name, error=str(exc))
            await self._on_lost()

    async def _retrying(self, step: Callable[[], Awaitable[None]]) -> None:
        """Run ``step`` until it succeeds, waiting out transient failures."""
        delay, bugs = 0.1, 0
        try:
            while True:
                try:
                    await step()
                    return
                except (CannotApply, ReadModelLost):
                    raise
                except Exception as exc:
                    kind = classify(exc)
                    if kind == "poison":
                        raise
                    ERRORS.labels(self.name, kind).inc()
                    RETRYING.labels(self.name).set(1)
                    log.warning(
                        "projection_store_error", projection=self.name, kind=kind, error=repr(exc)
                    )
                    if kind == "bug":
                        bugs += 1
                        if bugs >= BUG_ATTEMPTS:
                            raise ProjectorFailed(f"{self.name}: {exc!r}") from exc
                    if self._stop.is_set():
                        raise Stopping from exc
                    await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                    delay = min(delay * 2, 5.0)
        finally:
            RETRYING.labels(self.name).set(0)
