"""Continuous reconciliation: keep comparing a read model with the fold of the log, and repair.

Every ``interval`` seconds, one pass of two parts, each bounded so the cost does not grow with
traffic or with the size of the log:

- **recent**: the comments touched since the last pass (up to ``recent_limit``, most recent
  first), among events the projection says it has applied (its low-water mark);
- **sweep**: the next ``sweep_batch`` comments of all of them, in id order, wrapping around, so
  every comment is checked in time (``tally_reconcile_sweeps_total`` counts full rounds).

A comment's history is read from the event store and handed to the projection's ``reconcile``
(``projectors.judging`` decides what differs), which repairs through the same position guards as
live events: a repair never moves a read model backwards. Only the events after what an earlier
pass folded are read (``projectors.kept_truths``), so a hot comment costs a pass its new events,
not its whole history. Both run under the switch fence, like
a live batch. What it finds is counted and logged: a repair is a bug or a loss healed, worth an
alert (``ReadModelRepaired`` in compose).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence

import msgspec
import structlog
from prometheus_client import Counter, Gauge

from event_store.port import EventStore
from projectors.base import Projection
from projectors.fence import SwitchFence
from projectors.judging import Finding
from projectors.kept_truths import KeptTruths
from projectors.store_errors import classify

log = structlog.get_logger(__name__)

CHECKED = Counter(
    "tally_reconcile_checked_total", "Comments compared with the log", ["projection", "part"]
)
MISMATCHES = Counter(
    "tally_reconcile_mismatches_total", "Comments found to differ from the log", ["projection"]
)
REPAIRS = Counter("tally_reconcile_repairs_total", "Comments repaired", ["projection"])
SWEEPS = Counter(
    "tally_reconcile_sweeps_total", "Full sweeps over every comment completed", ["projection"]
)
LAST_PASS = Gauge(
    "tally_reconcile_last_pass_timestamp_seconds",
    "When the last reconciliation pass ended",
    ["projection"],
)


class ReconcilerConfig(msgspec.Struct, frozen=True, kw_only=True):
    interval_seconds: float = 5.0
    recent_limit: int = 500
    sweep_batch: int = 200
    kept_votes: int = 200_000  # the votes the kept folds may hold in all
    kept_seconds: float = 600.0  # each history is read whole again at least this often


class Reconciler:
    """Reconciles one projection; ``low_water`` says how far it has applied."""

    def __init__(
        self,
        projection: Projection,
        store: EventStore,
        fence: SwitchFence,
        low_water: Callable[[], int],
        config: ReconcilerConfig,
    ) -> None:
        self.projection = projection
        self._store = store
        self._fence = fence
        self._low_water = low_water
        self._config = config
        self._recent_after: int | None = None
        self._cursor = ""
        self._kept = KeptTruths(config.kept_votes, config.kept_seconds)
        self._last_low_water = 0
        self.findings: list[Finding] = []  # of the last pass

    async def run(self, stop: asyncio.Event) -> None:
        """Pass after pass until ``stop``; a store outage skips a pass, a bug stops it loudly."""
        name = self.projection.name
        try:
            while not stop.is_set():
                try:
                    await self.run_once()
                except Exception as exc:
                    if classify(exc) == "bug":
                        raise
                    log.warning("reconcile_pass_failed", projection=name, error=repr(exc))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._config.interval_seconds)
        finally:
            await self._fence.close()

    async def run_once(self) -> list[Finding]:
        """One pass (recent, then the next sweep batch); returns what it found and repaired."""
        name = self.projection.name
        low_water = self._low_water()
        if low_water < self._last_low_water:  # the projection starts over: so do the folds
            self._kept.clear()
        self._last_low_water = low_water
        findings: list[Finding] = []
        if self._recent_after is None:
            self._recent_after = low_water  # the sweep covers what came before
        elif low_water > self._recent_after:
            recent = await self._store.comments_touched(
                self._recent_after, low_water, self._config.recent_limit
            )
            findings += await self._check(recent, low_water, "recent")
            self._recent_after = low_water
        batch = await self._store.comments_after(self._cursor, self._config.sweep_batch)
        findings += await self._check(batch, low_water, "sweep")
        if len(batch) < self._config.sweep_batch:
            self._cursor = ""
            SWEEPS.labels(name).inc()
        else:
            self._cursor = batch[-1]
        LAST_PASS.labels(name).set_to_current_time()
        self.findings = findings
        return findings

    async def _check(self, comment_ids: Sequence[str], low_water: int, part: str) -> list[Finding]:
        if not comment_ids:
            return []
        name = self.projection.name
        tails = await self._store.read_comments(
            comment_ids, after=self._kept.positions(comment_ids)
        )
        histories = {c: self._kept.history(c, tails[c]) for c in comment_ids}
        async with self._fence.shared():
            findings = await self.projection.reconcile(histories, low_water, repair=True)
        for comment_id, history in histories.items():
            self._kept.keep(comment_id, history, low_water)
        CHECKED.labels(name, part).inc(len(comment_ids))
        if findings:
            wrong = {f.comment_id for f in findings}
            MISMATCHES.labels(name).inc(len(wrong))
            REPAIRS.labels(name).inc(len(wrong))
            log.error(
                "read_model_repaired",
                projection=name,
                part=part,
                comments=len(wrong),
                first=[str(f) for f in findings[:3]],
            )
        return findings
