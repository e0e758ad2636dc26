"""A seeded store is a normal store: write-side state matches its events, the outbox is full."""

from __future__ import annotations

from typing import Any

from psycopg_pool import AsyncConnectionPool

from event_store.postgres import PostgresEventStore
from event_store.seed import SeedPlan, seed
from kernel.settings import Settings
from projectors.fold import fold, user_votes


async def test_seeding_writes_events_outbox_and_matching_write_state(
    settings: Settings, clean_store: AsyncConnectionPool[Any]
) -> None:
    first, last = await seed(settings.pg_dsn, SeedPlan(events=2000, comments=60, users=50, seed=9))
    assert (first, last) == (1, 2000)
    events = [e async for b in PostgresEventStore(clean_store).read_all() for e in b]
    assert [e.position for e in events] == list(range(1, 2001))
    async with clean_store.connection() as conn:
        outbox = await (await conn.execute("SELECT count(*) FROM outbox")).fetchone()
        votes = await (
            await conn.execute("SELECT comment_id, user_id, value FROM votes")
        ).fetchall()
        comments = await (await conn.execute("SELECT count(*) FROM comments")).fetchone()
        head = await (await conn.execute("SELECT position FROM event_head")).fetchone()
    assert outbox == (2000,) and comments == (len(fold(events)),) and head == (2000,)
    assert {(c, u): v for c, u, v in votes if v} == user_votes(events)
