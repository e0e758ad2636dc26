"""The PostgreSQL event store.

Gap-safe global order (DESIGN guarantee 2): ``append_pending`` takes the single ``event_head``
row lock, bumps it by the number of events and inserts them, all in the caller's transaction.
The lock is held until commit, so appends commit one after another in position order: a reader
that has seen position P has already seen every position below P. A rollback also rolls back the
increment, so the log has no holes at all. The lock is taken last, after every decision, and a
group commit shares it among many commands, which keeps the serialized part short.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, NamedTuple

import msgspec
import psycopg
from prometheus_client import Histogram
from psycopg import AsyncClientCursor, AsyncCursor
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from event_store.bulk_read import stream_events
from event_store.errors import (
    CommitOutcomeUnknown,
    ConcurrencyError,
    EventStoreError,
    StoreUnavailable,
)
from event_store.port import PendingEvent
from schemas.codec import decode_event
from schemas.envelope import Envelope
from schemas.events import Event

_encoder = msgspec.json.Encoder()

# The serialized part of every append: from the head lock's UPDATE to COMMIT, plus any wait for
# the lock. With one writer, its sum over time is how busy the single writer is (bench.ceiling).
HEAD_LOCK_SECONDS = Histogram(
    "tally_event_head_lock_seconds",
    "Append and commit: the log head lock held, plus any wait for it (client round trip)",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)

_TAKE_POSITIONS = """head AS (
    UPDATE event_head SET position = position + %(n)s RETURNING position - %(n)s AS base
)"""
# With nothing to append, side writes still see the head but take no lock.
_READ_HEAD = "head AS (SELECT position AS base FROM event_head)"
_APPEND_CTES = """e AS (
    SELECT head.base + e.ord AS position, e.*
    FROM head, jsonb_to_recordset(%(events)s::jsonb) AS e(
        ord int, event_id uuid, stream_id text, stream_version int, type text,
        schema_version int2, data jsonb, metadata jsonb, key text)
), inserted AS (
    INSERT INTO events (position, event_id, stream_id, stream_version, type, schema_version,
                        data, metadata, recorded_at)
    SELECT position, event_id, stream_id, stream_version, type, schema_version, data, metadata,
           COALESCE(%(recorded_at)s::timestamptz, now())
    FROM e
), queued AS (
    INSERT INTO outbox (position, key) SELECT position, key FROM e
)"""


def connection_options(connect_timeout: float, statement_timeout_ms: int) -> dict[str, Any]:
    """libpq options for a pool: autocommit, bounded connects and statements, keepalives that
    notice a server gone silent (a paused or partitioned host) within seconds, and an idle
    transaction ended by the server (a client paused inside one would hold its locks)."""
    return {
        "autocommit": True,
        "connect_timeout": max(1, round(connect_timeout)),
        "options": f"-c statement_timeout={statement_timeout_ms}"
        " -c idle_in_transaction_session_timeout=5000",
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 2,
        "keepalives_count": 3,
    }


def json_rows(rows: Sequence[object]) -> str:
    """Rows as one JSON document, for ``jsonb_to_recordset`` in SQL.

    One document per statement is much cheaper than one array parameter per column.
    """
    return _encoder.encode(rows).decode()


class SideWrite(NamedTuple):
    """A data-modifying statement that runs with an append, in the same statement.

    It may read ``head.base`` (the position just before the first appended event) by selecting
    ``FROM head``. Its parameter names must not clash with the append's: prefix them.
    """

    sql: str
    params: dict[str, Any]


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


async def append_pending(
    cur: AsyncCursor[TupleRow],
    pending: Sequence[PendingEvent],
    side_writes: Sequence[SideWrite] = (),
) -> list[int]:
    """Record ``pending`` events, their outbox rows and ``side_writes`` in one statement.

    Runs in the cursor's open transaction and returns the position of each event, in order. A
    stream version that is taken already raises ``ConcurrencyError`` (the transaction is then
    aborted).
    """
    if not pending and not side_writes:
        return []
    query, params = _append_statement(pending, side_writes)
    with _translated_errors():
        await cur.execute(query, params)
        row = await cur.fetchone()
    return _positions(row, len(pending))


async def append_and_commit(
    cur: AsyncClientCursor[TupleRow],
    pending: Sequence[PendingEvent],
    side_writes: Sequence[SideWrite] = (),
    recorded_at: datetime | None = None,
) -> list[int]:
    """Like ``append_pending``, then COMMIT, in one message to the server.

    The server commits right after the append, so the log head lock is never held while the
    client is busy elsewhere. On error the transaction is left aborted: roll it back.
    ``recorded_at``: the events' time, when the caller has already answered with it (the
    transaction's start by default).
    """
    query, params = _append_statement(pending, side_writes, recorded_at)
    message = cur.mogrify(query, params) + ";\nCOMMIT"
    try:
        with _translated_errors(), HEAD_LOCK_SECONDS.time():
            await cur.execute(message)
            row = await cur.fetchone()
    except StoreUnavailable as exc:
        if cur.connection.broken:
            raise CommitOutcomeUnknown(str(exc)) from exc.__cause__
        raise
    return _positions(row, len(pending))


def _append_statement(
    pending: Sequence[PendingEvent],
    side_writes: Sequence[SideWrite],
    recorded_at: datetime | None = None,
) -> tuple[str, dict[str, Any]]:
    ctes = [_TAKE_POSITIONS, _APPEND_CTES] if pending else [_READ_HEAD]
    params: dict[str, Any] = {}
    if pending:
        params = {
            "n": len(pending),
            "recorded_at": recorded_at,
            "events": json_rows(
                [
                    {
                        "ord": ord_,
                        "event_id": p.event_id,
                        "stream_id": p.stream_id,
                        "stream_version": p.stream_version,
                        "type": type(p.event).__name__,
                        "schema_version": p.event.schema_version,
                        "data": p.event,
                        "metadata": _metadata(p),
                        "key": p.event.comment_id,
                    }
                    for ord_, p in enumerate(pending, start=1)
                ]
            ),
        }
    for number, side in enumerate(side_writes):
        ctes.append(f"side_{number} AS ({side.sql})")
        params.update(side.params)
    return "WITH " + ",\n".join(ctes) + "\nSELECT base FROM head", params


def _positions(row: Sequence[Any] | None, count: int) -> list[int]:
    if row is None:
        raise EventStoreError("the append returned no head position")
    base = int(row[0])
    return list(range(base + 1, base + 1 + count))


@contextmanager
def _translated_errors() -> Iterator[None]:
    try:
        yield
    except psycopg.errors.UniqueViolation as exc:
        raise ConcurrencyError(str(exc).splitlines()[0]) from exc
    except psycopg.OperationalError as exc:
        raise StoreUnavailable(str(exc).splitlines()[0] if str(exc) else repr(exc)) from exc
    except psycopg.Error as exc:
        raise EventStoreError(str(exc)) from exc


def _metadata(pending: PendingEvent) -> dict[str, str]:
    meta = {
        "correlation_id": pending.correlation_id,
        "causation_id": pending.causation_id,
        "traceparent": pending.traceparent,
    }
    return {k: v for k, v in meta.items() if v is not None}


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
        self, after: int = 0, batch_size: int = 1000, until: int | None = None
    ) -> AsyncIterator[list[Envelope]]:
        """See ``EventStore.read_all``; streams with COPY (``event_store.bulk_read``)."""
        upto = until if until is not None else 2**62
        async with self._pool.connection() as conn:
            async for batch in stream_events(conn, after, upto, batch_size):
                yield batch

    async def read_comments(
        self,
        comment_ids: Sequence[str],
        until: int | None = None,
        after: Mapping[str, int] | None = None,
    ) -> dict[str, list[Envelope]]:
        """See ``EventStore.read_comments`` (uses the ``events_by_comment`` index)."""
        histories: dict[str, list[Envelope]] = {c: [] for c in comment_ids}
        after = after or {}
        async with self._pool.connection() as conn, conn.cursor() as cur:
            # One index range per comment, from its own starting point.
            await cur.execute(
                SELECT_ENVELOPE
                + " JOIN unnest(%s::text[], %s::bigint[]) AS wanted(comment_id, after)"
                " ON data->>'comment_id' = wanted.comment_id AND position > wanted.after"
                " WHERE position <= %s ORDER BY position",
                (
                    list(comment_ids),
                    [after.get(c, 0) for c in comment_ids],
                    until if until is not None else 2**62,
                ),
            )
            while rows := await cur.fetchmany(500):
                for row in rows:
                    envelope = envelope_from_row(row)
                    histories[str(envelope.event.comment_id)].append(envelope)
                await asyncio.sleep(0)  # a long read must not stall a projection sharing the loop
        return histories

    async def comments_touched(self, after: int, upto: int, limit: int) -> list[str]:
        """See ``EventStore.comments_touched``."""
        async with self._pool.connection() as conn, conn.cursor() as cur:
            await cur.execute(
                "SELECT data->>'comment_id' FROM events WHERE position > %s AND position <= %s"
                " GROUP BY 1 ORDER BY max(position) DESC LIMIT %s",
                (after, upto, limit),
            )
            return [str(row[0]) for row in await cur.fetchall()]

    async def comments_after(self, comment_id: str, limit: int) -> list[str]:
        """See ``EventStore.comments_after``: a loose scan of ``events_by_comment`` (one index
        probe per comment, however many events each has)."""
        async with self._pool.connection() as conn, conn.cursor() as cur:
            await cur.execute(
                "WITH RECURSIVE ids AS ("
                " (SELECT data->>'comment_id' AS id FROM events"
                "  WHERE data->>'comment_id' > %(after)s ORDER BY 1 LIMIT 1)"
                " UNION ALL"
                " SELECT (SELECT data->>'comment_id' FROM events"
                "  WHERE data->>'comment_id' > ids.id ORDER BY 1 LIMIT 1)"
                " FROM ids WHERE ids.id IS NOT NULL"
                ") SELECT id FROM ids WHERE id IS NOT NULL LIMIT %(n)s",
                {"after": comment_id, "n": limit},
            )
            return [str(row[0]) for row in await cur.fetchall()]

    async def head(self) -> int:
        """See ``EventStore.head``."""
        async with self._pool.connection() as conn, conn.cursor() as cur:
            await cur.execute("SELECT position FROM event_head")
            row = await cur.fetchone()
            return int(row[0]) if row else 0
