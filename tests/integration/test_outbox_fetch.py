"""The relay reads the outbox from where it last deleted, in position order."""

from __future__ import annotations

from typing import Any

from psycopg_pool import AsyncConnectionPool

from event_store import outbox
from tests.pipeline import record_history


async def test_a_batch_starts_after_the_last_deleted_position_and_keeps_the_order(
    apool: AsyncConnectionPool[Any],
) -> None:
    history = await record_history(apool, 50, seed=3)
    positions = [e.position for e in history]
    async with apool.connection() as conn:
        first = await outbox.fetch_batch(conn, 10)
        after = await outbox.fetch_batch(conn, 10, after=first[-1].position)
        rest = await outbox.fetch_batch(conn, 1000, after=positions[-5])
    assert [r.position for r in first] == positions[:10]
    assert [r.position for r in after] == positions[10:20]
    assert [r.position for r in rest] == positions[-4:]
