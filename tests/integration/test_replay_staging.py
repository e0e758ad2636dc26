"""``replay`` stages each batch while the one before it is written, against the real log: the
writes still land one at a time and in position order, and the recorded progress never runs
ahead of what was written, so a write that fails leaves a resumable position behind."""

from __future__ import annotations

import asyncio
import functools
import itertools
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from event_store.bulk_read import ENTRIES
from event_store.seed import SeedPlan, seed
from kernel.settings import Settings
from projectors.replay import replay
from schemas.envelope import LogEntry


class Recording:
    """A rebuild that writes nowhere and records when each batch is staged and written."""

    batch_size = 1_000
    log = ENTRIES

    def __init__(self, dsn: str, fail_at: int | None = None) -> None:
        self.name = f"staging-{uuid.uuid4().hex[:8]}"
        self.steps: list[tuple[str, int]] = []
        self.recorded_while_writing: list[int] = []
        self._dsn = dsn
        self._fail_at = fail_at

    async def begin(self, resume: str | None) -> str:
        return resume or "target"

    def stage(self, envelopes: Sequence[LogEntry]) -> Callable[[], Awaitable[None]]:
        self.steps.append(("staged", envelopes[-1].position))
        return functools.partial(self._write, envelopes[-1].position)

    async def _write(self, last: int) -> None:
        self.steps.append(("started", last))
        async with await psycopg.AsyncConnection.connect(self._dsn) as conn:
            row = await (
                await conn.execute(
                    "SELECT position FROM replays WHERE projection = %s", (self.name,)
                )
            ).fetchone()
        self.recorded_while_writing.append(int(row[0]) if row else 0)
        await asyncio.sleep(0.02)  # long enough for the next batch to be staged meanwhile
        if last == self._fail_at:
            raise RuntimeError("the target refused the write")
        self.steps.append(("written", last))

    async def bulk_done(self) -> None:
        pass

    async def switch(self) -> str:
        return "old"

    async def finish(self, old: str, keep: bool) -> None:
        pass


async def _seeded(settings: Settings) -> list[int]:
    """Seeds 5,000 events; returns the last position of each 1,000-event batch."""
    await seed(
        settings.pg_dsn, SeedPlan(events=5_000, commentables=5, comments=200, users=300), False
    )
    async with await psycopg.AsyncConnection.connect(settings.pg_dsn) as conn:
        rows = await (
            await conn.execute("SELECT position FROM events ORDER BY position")
        ).fetchall()
    positions = [int(r[0]) for r in rows]
    return positions[999::1000]


async def test_batches_are_staged_while_the_one_before_is_written_and_written_in_order(
    settings: Settings, clean_store: AsyncConnectionPool[Any]
) -> None:
    ends = await _seeded(settings)
    rebuild = Recording(settings.pg_dsn)
    result = await replay(settings.pg_dsn, rebuild)
    assert result.events == 5_000 and result.position == ends[-1]
    writes = [(step, at) for step, at in rebuild.steps if step != "staged"]
    # One write at a time, each batch once, in position order.
    assert writes == [(step, at) for at in ends for step in ("started", "written")]
    for previous, nxt in itertools.pairwise(ends):
        # The next batch was staged before the write of this one had finished.
        assert rebuild.steps.index(("staged", nxt)) < rebuild.steps.index(("written", previous))
    # While a batch was being written, progress said at most the end of the batch before it
    # (its record is written alongside the next write, so it may still say less).
    before = [0, *ends[:-1]]
    assert len(rebuild.recorded_while_writing) == len(ends)
    assert all(s <= b for s, b in zip(rebuild.recorded_while_writing, before, strict=True))


async def test_a_failed_write_leaves_progress_at_the_last_batch_written(
    settings: Settings, clean_store: AsyncConnectionPool[Any]
) -> None:
    ends = await _seeded(settings)
    rebuild = Recording(settings.pg_dsn, fail_at=ends[2])
    with pytest.raises(RuntimeError, match="refused"):
        await replay(settings.pg_dsn, rebuild)
    # The fourth batch was staged during the failing write, and is not counted as progress.
    assert ("staged", ends[3]) in rebuild.steps and ("started", ends[3]) not in rebuild.steps
    async with await psycopg.AsyncConnection.connect(settings.pg_dsn) as conn:
        row = await (
            await conn.execute(
                "SELECT position FROM replays WHERE projection = %s", (rebuild.name,)
            )
        ).fetchone()
    assert row is not None and int(row[0]) == ends[1]
