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


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [plan, *(n for child in plan.get("Plans", []) for n in _nodes(child))]


async def test_a_batch_looks_up_only_its_own_events_whatever_the_statistics_say(
    apool: AsyncConnectionPool[Any],
) -> None:
    """The outbox analyzed while empty, then filled: the planner believes it holds nothing. A
    batch must still read one event per row it returns, never the log from its start."""
    history = await record_history(apool, 3000, seed=4)
    async with apool.connection() as conn:
        rows = await (await conn.execute("SELECT position, key FROM outbox")).fetchall()
        await conn.execute("DELETE FROM outbox")
        await conn.execute("ANALYZE outbox")
        async with conn.cursor() as cur:
            await cur.executemany("INSERT INTO outbox (position, key) VALUES (%s, %s)", rows)
        after, limit = history[1000].position, 200
        explained = await (
            await conn.execute(
                "EXPLAIN (ANALYZE, FORMAT JSON) " + outbox._BATCH,
                (after, limit),
            )
        ).fetchone()
        batch = await outbox.fetch_batch(conn, limit, after)
    assert explained is not None
    events = [n for n in _nodes(explained[0][0]["Plan"]) if n.get("Relation Name") == "events"]
    assert events, explained
    for node in events:
        assert node["Actual Loops"] * max(node["Actual Rows"], 1) <= limit, node
    assert [r.position for r in batch] == [e.position for e in history[1001:1201]]
