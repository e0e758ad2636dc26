"""The runner applies one batch while it decodes the next: what it saves must still claim only
what the projection has applied (real broker, PostgreSQL and Redis)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from event_store.partitioning import partition_for
from kernel.settings import Settings
from projectors import runner as runner_module
from projectors.judging import CommentHistory, Finding
from projectors.redis_scores import RedisScoresProjection
from projectors.runner import ProjectorRunner
from schemas.envelope import Envelope
from tests.pipeline import (
    eventually,
    isolated,
    publish,
    record_history,
    redis_matches_store,
    runner_for,
    running,
)


class _Watched:
    """The Redis projection, slowed down so that the next batch is admitted while one is being
    applied, checking at every batch that no saved position claims an unapplied event."""

    def __init__(
        self,
        inner: RedisScoresProjection,
        pool: AsyncConnectionPool[Any],
        history: list[Envelope],
        partitions: int,
    ) -> None:
        self.name = f"overlap{uuid.uuid4().hex[:8]}"
        self._inner = inner
        self._pool = pool
        self._partition = {
            e.position: partition_for(e.event.comment_id, partitions) for e in history
        }
        self.applied: set[int] = set()
        self.batches: list[list[int]] = []  # the positions of each applied batch, in order
        self.claimed_unapplied: list[int] = []
        self.admitted_ahead = 0
        self.runner: ProjectorRunner | None = None

    async def setup(self) -> None:
        await self._inner.setup()

    async def apply(self, envelopes: Sequence[Envelope]) -> None:
        await self._check_saved()
        await asyncio.sleep(0.05)
        in_flight = self.applied | {e.position for e in envelopes}
        if self._ahead_of(in_flight):
            self.admitted_ahead += 1
        await self._inner.apply(envelopes)
        self.applied |= {e.position for e in envelopes}
        self.batches.append([e.position for e in envelopes])

    def partition_of(self, position: int) -> int:
        """The partition an event of the history travels on."""
        return self._partition[position]

    def _ahead_of(self, in_flight: set[int]) -> bool:
        """Has the runner admitted an event of a later batch (its tracker claims one that is
        neither applied nor in this batch)?"""
        assert self.runner is not None
        seen = self.runner.tracker.seen
        return any(
            position not in in_flight and position <= seen.get(partition, 0)
            for position, partition in self._partition.items()
        )

    async def _check_saved(self) -> None:
        async with self._pool.connection() as conn:
            rows = await (
                await conn.execute(
                    "SELECT partition, last_position FROM projection_partitions"
                    " WHERE projection = %s",
                    (self.name,),
                )
            ).fetchall()
        saved = {int(p): int(last) for p, last in rows}
        self.claimed_unapplied += [
            position
            for position, partition in self._partition.items()
            if position <= saved.get(partition, 0) and position not in self.applied
        ]

    async def intact(self) -> bool:
        return await self._inner.intact()

    async def mark_intact(self) -> None:
        await self._inner.mark_intact()

    async def reconcile(
        self, histories: Mapping[str, CommentHistory], low_water: int, repair: bool
    ) -> list[Finding]:
        return await self._inner.reconcile(histories, low_water, repair)

    async def close(self) -> None:
        await self._inner.close()


async def test_saved_positions_never_run_ahead_of_the_batch_in_flight(
    settings: Settings, apool: AsyncConnectionPool[Any], redis: Redis
) -> None:
    projection = await _run_until_all_applied(settings, apool, redis, batch_size=20, seed=11)
    assert projection.claimed_unapplied == []
    # The overlap happened: batches were admitted while an earlier one was being applied.
    assert projection.admitted_ahead > 0


async def test_a_batch_is_gathered_from_slices_in_each_partitions_order(
    settings: Settings,
    apool: AsyncConnectionPool[Any],
    redis: Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The runner takes a batch from the consumer in slices (so that parsing records never
    holds the event loop for long): batches still fill up to their size, no further, and each
    partition's events are applied in position order."""
    monkeypatch.setattr(runner_module, "_FETCH_SLICE", 7)
    projection = await _run_until_all_applied(settings, apool, redis, batch_size=50, seed=12)
    sizes = [len(batch) for batch in projection.batches]
    assert 7 < max(sizes) <= 50, sizes
    order = [position for batch in projection.batches for position in batch]
    by_partition: dict[int, list[int]] = {}
    for position in order:
        by_partition.setdefault(projection.partition_of(position), []).append(position)
    for positions in by_partition.values():
        assert positions == sorted(set(positions))


async def _run_until_all_applied(
    settings: Settings,
    apool: AsyncConnectionPool[Any],
    redis: Redis,
    batch_size: int,
    seed: int,
) -> _Watched:
    """Publish a history of 400 events and run the watched projection until Redis matches the
    store and every event was applied."""
    config = isolated(settings, projector_batch_size=batch_size)
    history = await record_history(apool, 400, seed=seed)
    await publish(config, apool)
    projection = _Watched(
        RedisScoresProjection(redis, config.redis_generation),
        apool,
        history,
        config.kafka_partitions,
    )
    runner = projection.runner = runner_for(projection, config, apool)
    async with running(runner):
        await eventually(lambda: redis_matches_store(redis, config.redis_generation, apool), 60)
        await eventually(lambda: _all_applied(projection, history), 30)
    return projection


async def _all_applied(projection: _Watched, history: list[Envelope]) -> bool:
    return projection.applied >= {e.position for e in history}
