"""Parked events: what a projection could not apply, and what waits behind it.

An event that cannot be decoded or applied is parked here (and copied to the Kafka DLQ topic),
never dropped. Later events of the same comment are parked behind it, so a comment's events
are always applied in order; other comments go on. ``retry`` re-reads parked events from the
event store and applies them in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg_pool import AsyncConnectionPool

from event_store.postgres import SELECT_ENVELOPE, envelope_from_row
from projectors.base import CannotApply, Projection
from schemas.codec import UnknownEventError


async def park(
    pool: AsyncConnectionPool[Any], projection: str, rows: Sequence[tuple[int, str, str]]
) -> None:
    """Park (position, comment id, error) rows for ``projection``."""
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO parked_events (projection, position, comment_id, error)"
            " SELECT %s, * FROM unnest(%s::int8[], %s::text[], %s::text[])"
            " ON CONFLICT DO NOTHING",
            (projection, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]),
        )


async def parked_comments(pool: AsyncConnectionPool[Any], projection: str) -> set[str]:
    """Comments of ``projection`` that have events waiting."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT DISTINCT comment_id FROM parked_events WHERE projection = %s", (projection,)
        )
        return {row[0] for row in await cur.fetchall()}


async def list_parked(
    pool: AsyncConnectionPool[Any], projection: str | None = None, limit: int = 100
) -> list[tuple[str, int, str, str, Any]]:
    """(projection, position, comment id, error, parked at), oldest first."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT projection, position, comment_id, error, parked_at FROM parked_events"
            " WHERE %(p)s::text IS NULL OR projection = %(p)s ORDER BY position LIMIT %(n)s",
            {"p": projection, "n": limit},
        )
        return [tuple(row) for row in await cur.fetchall()]


async def retry(pool: AsyncConnectionPool[Any], projection: Projection) -> tuple[int, int]:
    """Apply the projection's parked events in order; return (applied, still parked)."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT position, comment_id FROM parked_events WHERE projection = %s"
            " ORDER BY position",
            (projection.name,),
        )
        parked = await cur.fetchall()
        cur = await conn.execute(
            SELECT_ENVELOPE + " WHERE position = ANY(%s)", ([p for p, _ in parked],)
        )
        rows = {row[0]: row for row in await cur.fetchall()}
    applied, blocked = 0, set()
    for position, comment_id in parked:
        if comment_id in blocked:
            continue
        try:
            await projection.apply([envelope_from_row(rows[position])])
        except (CannotApply, UnknownEventError) as exc:
            blocked.add(comment_id)  # later events of this comment keep waiting behind it
            await _note(pool, projection.name, position, str(exc))
            continue
        async with pool.connection() as conn:
            await conn.execute(
                "DELETE FROM parked_events WHERE projection = %s AND position = %s",
                (projection.name, position),
            )
        applied += 1
    return applied, len(parked) - applied


async def _note(pool: AsyncConnectionPool[Any], projection: str, position: int, error: str) -> None:
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE parked_events SET error = %s WHERE projection = %s AND position = %s",
            (error, projection, position),
        )
