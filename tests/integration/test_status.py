"""``tally status`` shows the stack, the head, the backlog and each projection."""

from __future__ import annotations

from typing import Any

from psycopg_pool import AsyncConnectionPool
from rich.console import Console

from event_store.seed import SeedPlan, seed
from tally.settings import Settings
from tally.status import render


async def test_status_shows_servers_head_backlog_and_projections(
    settings: Settings, clean_store: AsyncConnectionPool[Any]
) -> None:
    await seed(settings.pg_dsn, SeedPlan(events=300, comments=20, users=10))
    async with clean_store.connection() as conn:
        await conn.execute(
            "INSERT INTO projection_partitions VALUES ('redis', 0, 250), ('redis', 1, 120)"
        )
        await conn.execute(
            "INSERT INTO parked_events (projection, position, comment_id, error)"
            " VALUES ('votes', 7, 'c', 'boom')"
        )
    console = Console(record=True, width=120)
    console.print(render(settings))
    text = console.export_text()
    for server in ("postgres", "redis", "kafka", "elasticsearch"):
        assert server in text
    assert "head position  │ 300" in text
    assert "outbox backlog │ 300" in text
    assert "redis      │ 250        │ 50" in text  # checkpoint 250, lag 50
    assert "votes      │ -          │ not started  │ 1" in text
