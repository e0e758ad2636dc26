"""Parked events: what a projection could not apply, and what waits behind it.

An event that can never be applied (undecodable, refused as invalid) is parked here, copied to
the Kafka DLQ topic, and never dropped. Later events of the same comment are parked behind it
(``held``), so a comment's events are always applied in order; other comments go on.
``retry`` re-reads parked events from the event store and applies them in order; once a
comment's poison is gone, the live runner drains what it held (``held_only``) and lets the
comment go on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import msgspec
import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from psycopg_pool import AsyncConnectionPool

from event_store.messaging import KafkaAccess, ensure_topic
from event_store.postgres import SELECT_ENVELOPE, envelope_from_row
from projectors.base import CannotApply, Projection
from schemas.codec import UnknownEventError

log = structlog.get_logger(__name__)

HELD = "held behind a parked event"


class Parked(NamedTuple):
    """One event a projection could not apply yet."""

    position: int
    comment_id: str
    error: str
    held: bool = False


class ParkedRow(NamedTuple):
    projection: str
    position: int
    comment_id: str
    error: str
    parked_at: Any


async def park(pool: AsyncConnectionPool[Any], projection: str, rows: Sequence[Parked]) -> None:
    """Park ``rows`` for ``projection``."""
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO parked_events (projection, position, comment_id, error, held)"
            " SELECT %s, * FROM unnest(%s::int8[], %s::text[], %s::text[], %s::bool[])"
            " ON CONFLICT DO NOTHING",
            (
                projection,
                [r.position for r in rows],
                [r.comment_id for r in rows],
                [r.error for r in rows],
                [r.held for r in rows],
            ),
        )


async def blocked(pool: AsyncConnectionPool[Any], projection: str) -> tuple[set[str], set[str]]:
    """(comments behind a poison event, comments whose parked events are all held)."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT comment_id, bool_and(held) FROM parked_events WHERE projection = %s"
            " GROUP BY comment_id",
            (projection,),
        )
        rows = await cur.fetchall()
    poisoned = {str(c) for c, all_held in rows if not all_held}
    return poisoned, {str(c) for c, all_held in rows if all_held}


async def list_parked(
    pool: AsyncConnectionPool[Any], projection: str | None = None, limit: int = 100
) -> list[ParkedRow]:
    """Parked events, oldest first."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT projection, position, comment_id, error, parked_at FROM parked_events"
            " WHERE %(p)s::text IS NULL OR projection = %(p)s ORDER BY position LIMIT %(n)s",
            {"p": projection, "n": limit},
        )
        return [ParkedRow(*row) for row in await cur.fetchall()]


async def show(
    pool: AsyncConnectionPool[Any], projection: str, position: int
) -> dict[str, Any] | None:
    """One parked event with its envelope from the log, or None if it is not parked."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT comment_id, error, held, parked_at FROM parked_events"
            " WHERE projection = %s AND position = %s",
            (projection, position),
        )
        row = await cur.fetchone()
        if row is None:
            return None
        cur = await conn.execute(SELECT_ENVELOPE + " WHERE position = %s", (position,))
        event = await cur.fetchone()
    comment_id, error, held, parked_at = row
    return {
        "projection": projection,
        "position": position,
        "comment_id": comment_id,
        "error": error,
        "held": held,
        "parked_at": parked_at,
        "envelope": msgspec.to_builtins(envelope_from_row(event)) if event else None,
    }


async def skip(pool: AsyncConnectionPool[Any], projection: str, position: int) -> bool:
    """Drop one parked event for good; True if it was parked.

    Events held behind it are then applied by the live runner (the comment is no longer
    poisoned); the read model lacks the skipped event until a replay.
    """
    async with pool.connection() as conn:
        cur = await conn.execute(
            "DELETE FROM parked_events WHERE projection = %s AND position = %s",
            (projection, position),
        )
        dropped = bool(cur.rowcount)
    if dropped:
        log.warning("parked_event_skipped", projection=projection, position=position)
    return dropped


async def retry(
    pool: AsyncConnectionPool[Any], projection: Projection, comments: set[str] | None = None
) -> tuple[int, int]:
    """Apply the projection's parked events (of ``comments``, or all) in order.

    Returns (applied, still parked). A comment whose event fails again keeps the rest waiting.
    """
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT position, comment_id FROM parked_events WHERE projection = %(p)s"
            " AND (%(c)s::text[] IS NULL OR comment_id = ANY(%(c)s)) ORDER BY position",
            {"p": projection.name, "c": sorted(comments) if comments is not None else None},
        )
        parked = await cur.fetchall()
        cur = await conn.execute(
            SELECT_ENVELOPE + " WHERE position = ANY(%s)", ([p for p, _ in parked],)
        )
        rows = {row[0]: row for row in await cur.fetchall()}
    applied, blocked_now = 0, set()
    for position, comment_id in parked:
        if comment_id in blocked_now:
            continue
        try:
            await projection.apply([envelope_from_row(rows[position])])
        except (CannotApply, UnknownEventError) as exc:
            blocked_now.add(comment_id)  # later events of this comment keep waiting behind it
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
            "UPDATE parked_events SET error = %s, held = false"
            " WHERE projection = %s AND position = %s",
            (error, projection, position),
        )


class DeadLetters:
    """Parks events of one projection and copies them to the DLQ topic (best effort)."""

    def __init__(
        self, pool: AsyncConnectionPool[Any], projection: str, kafka: KafkaAccess, topic: str
    ) -> None:
        self._pool = pool
        self._projection = projection
        self._kafka = kafka
        self._topic = topic
        self._producer: AIOKafkaProducer | None = None

    async def park(self, rows: Sequence[Parked]) -> None:
        """Record ``rows`` (the table is the record), then copy them to Kafka."""
        await park(self._pool, self._projection, rows)
        try:
            if self._producer is None:
                await ensure_topic(self._kafka, self._topic, 1)  # brokers create none on demand
                self._producer = AIOKafkaProducer(
                    **self._kafka.client_options(), request_timeout_ms=10_000
                )
                await self._producer.start()
            for row in rows:
                body = {
                    "projection": self._projection,
                    "position": row.position,
                    "comment_id": row.comment_id,
                    "error": row.error,
                }
                await self._producer.send(
                    self._topic, msgspec.json.encode(body), key=row.comment_id.encode()
                )
        except (KafkaError, OSError) as exc:  # the parked_events table is the record
            log.warning("dlq_copy_failed", error=str(exc))

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
