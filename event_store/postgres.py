"""The PostgreSQL event store.

Gap-safe global order (DESIGN guarantee 2): ``append_pending`` takes the single ``event_head``
row lock, bumps it by the number of events and inserts them, all in the caller's transaction.
The lock is held until commit, so appends commit one after another in position order: a reader
that has seen position P has already seen every position below P. A rollback also rolls back the
increment, so the log has no holes at all. The lock is taken last, after every decision, and a
group commit shares it among many commands, which keeps the serialized part short.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import msgspec
import psycopg
from psycopg import AsyncCursor
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from event_store.errors import ConcurrencyError, EventStoreError
from event_store.port import PendingEvent
from schemas.codec import decode_event, encode
from schemas.envelope import Envelope
from schemas.events import Event

_APPEND = """
WITH head AS (
    UPDATE event_head SET position = position + %(n)s
    RETURNING position - %(n)s AS base
), e AS (
    SELECT head.base + e.ord AS position, e.*
    FROM head, unnest(
        %(event_ids)s::uuid[], %(stream_ids)s::text[], %(versions)s::int[], %(types)s::text[],
        %(schema_versions)s::int2[], %(data)s::text[], %(metadata)s::text[], %(keys)s::text[]
    ) WITH ORDINALITY AS e(event_id, stream_id, stream_version, type, schema_version, data,
                           metadata, key, ord)
), inserted AS (
    INSERT INTO events (position, event_id, stream_id, stream_version, type, schema_version,
                        data, metadata)
    SELECT position, event_id, stream_id, stream_version, type, schema_version, data::jsonb,
           metadata::jsonb
    FROM e
), queued AS (
    INSERT INTO outbox (position, key) SELECT position, key FROM e
)
SELECT base FROM head
"""

SELECT_ENVELOPE = """
SELECT position, event_id, stream_id, stream_version, type, schema_version, data::text,
       recorded_at, metadata->>'correlation_id', metadata->>'causation_id'
FROM events
"""


def envelope_from_row(row: Sequence[Any]) -> Envelope:
    """Turn a row of ``SELECT_ENVELOPE`` into an envelope, upcasting old schema versions."""
    position, event_id, stream_id, version, type_name, schema_version, data = row[:7]
    return Envelope(
        event_id=event_id,
        stream_id=stream_id,
        stream_version=version,
        position=position,
        occurred_at=row[7],
        correlation_id=row[8],
        causation_id=row[9],
        event=decode_event(type_name, schema_version, data),
    )


async def append_pending(cur: AsyncCursor[TupleRow], pending: Sequence[PendingEvent]) -> list[int]:
    """Record ``pending`` events and their outbox rows in the cursor's open transaction.

    Returns the position of each event, in order. A stream version that is taken already
    raises ``ConcurrencyError`` (the transaction is then aborted).
    """
    if not pending:
        return []
    params = {
        "n": len(pending),
        "event_ids": [p.event_id for p in pending],
        "stream_ids": [p.stream_id for p in pending],
        "versions": [p.stream_version for p in pending],
        "types": [type(p.event).__name__ for p in pending],
        "schema_versions": [p.event.schema_version for p in pending],
        "data": [encode(p.event).decode() for p in pending],
        "metadata": [_metadata(p) for p in pending],
        "keys": [str(p.event.comment_id) for p in pending],
    }
    try:
        await cur.execute(_APPEND, params)
    except psycopg.errors.UniqueViolation as exc:
        raise ConcurrencyError(str(exc).splitlines()[0]) from exc
    except psycopg.Error as exc:
        raise EventStoreError(str(exc)) from exc
    row = await cur.fetchone()
    assert row is not None
    base = int(row[0])
    return list(range(base + 1, base + 1 + len(pending)))


def _metadata(pending: PendingEvent) -> str:
    meta = {"correlation_id": pending.correlation_id, "causation_id": pending.causation_id}
    return msgspec.json.encode({k: v for k, v in meta.items() if v is not None}).decode()


class PostgresEventStore:
    """The ``EventStore`` port on a psycopg connection pool."""

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self._pool = pool

    async def append(
        self,
        stream_id: str,
        expected_version: int,
        events: Sequence[Event],
        correlation_id: str | None = None,
    ) -> list[int]:
        """See ``EventStore.append``."""
        async with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            await cur.execute(
                "SELECT coalesce(max(stream_version), 0) FROM events WHERE stream_id = %s",
                (stream_id,),
            )
            row = await cur.fetchone()
            current = int(row[0]) if row else 0
            if current != expected_version:
                raise ConcurrencyError(
                    f"{stream_id} is at version {current}, expected {expected_version}"
                )
            pending = [
                PendingEvent(
                    stream_id=stream_id,
                    stream_version=expected_version + offset,
                    event=event,
                    correlation_id=correlation_id,
                )
                for offset, event in enumerate(events, start=1)
            ]
            return await append_pending(cur, pending)

    async def read_stream(self, stream_id: str) -> list[Envelope]:
        """See ``EventStore.read_stream``."""
        async with self._pool.connection() as conn, conn.cursor() as cur:
            await cur.execute(
                SELECT_ENVELOPE + " WHERE stream_id = %s ORDER BY stream_version", (stream_id,)
            )
            return [envelope_from_row(r) for r in await cur.fetchall()]

    async def read_all(
        self, after: int = 0, batch_size: int = 1000
    ) -> AsyncIterator[list[Envelope]]:
        """See ``EventStore.read_all``; streams through a server-side cursor."""
        async with self._pool.connection() as conn, conn.transaction():
            cur = conn.cursor(name="tally_read_all")
            try:
                await cur.execute(
                    SELECT_ENVELOPE + " WHERE position > %s ORDER BY position", (after,)
                )
                while rows := await cur.fetchmany(batch_size):
                    yield [envelope_from_row(r) for r in rows]
            finally:
                await cur.close()

    async def head(self) -> int:
        """See ``EventStore.head``."""
        async with self._pool.connection() as conn, conn.cursor() as cur:
            await cur.execute("SELECT position FROM event_head")
            row = await cur.fetchone()
            return int(row[0]) if row else 0
