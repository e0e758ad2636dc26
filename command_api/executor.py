"""Run batches against PostgreSQL; when a batch fails as a whole, run its commands one by one.

So one bad command never fails the others: a conflict or deadlock that aborts the shared
transaction is retried per command, and only the command that still fails gets the error.

An outage is not a conflict: when PostgreSQL cannot be reached (or a statement times out),
every command of the batch answers "unavailable" at once, with nothing written. When the
connection broke during the COMMIT itself, the outcome is unknown: it is read back (does the
batch's first event exist?) so a client is never told "conflict" about its own successful write.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import Any
from uuid import UUID

import psycopg
import structlog
from prometheus_client import Counter
from psycopg_pool import AsyncConnectionPool

from command_api.unit_of_work import BatchOutcomeUnknown, run_batch
from command_api.work import Outcome, WorkItem
from event_store.errors import ConcurrencyError, EventStoreError, StoreUnavailable

log = structlog.get_logger(__name__)

UNKNOWN_COMMITS = Counter(
    "tally_commit_outcome_unknown_total",
    "Batches whose COMMIT lost its connection, by what reading back found",
    ["found"],
)

_RETRYABLE = (
    ConcurrencyError,
    psycopg.errors.DeadlockDetected,
    psycopg.errors.SerializationFailure,
    psycopg.errors.UniqueViolation,
)


class CommandExecutor:
    """Turns work items into outcomes through ``run_batch``."""

    def __init__(
        self, pool: AsyncConnectionPool[Any], idempotency_ttl: int, attempts: int = 4
    ) -> None:
        self._pool = pool
        self._ttl = idempotency_ttl
        self._attempts = attempts

    async def run(self, items: Sequence[WorkItem]) -> list[Outcome]:
        """One outcome per item; never raises for a single command's failure."""
        try:
            return await self._once(items)
        except BatchOutcomeUnknown as unknown:
            return await self._resolve(unknown, len(items))
        except (psycopg.Error, EventStoreError) as exc:
            if _unavailable(exc):
                log.error("store_unavailable", error=str(exc))
                return [StoreUnavailable("the event store is unavailable")] * len(items)
            if len(items) > 1:
                log.info("batch_split", size=len(items), reason=type(exc).__name__)
            return [(await self._alone(item)) for item in items]

    async def _once(self, items: Sequence[WorkItem]) -> list[Outcome]:
        async with self._pool.connection() as conn:
            return await run_batch(conn, items, self._ttl)

    async def _resolve(self, unknown: BatchOutcomeUnknown, count: int) -> list[Outcome]:
        """Did the batch commit? Its first event says; if it cannot be read, nobody knows."""
        unavailable: list[Outcome] = [
            StoreUnavailable(
                "the event store did not confirm the write; retry with the same"
                " Idempotency-Key to learn its outcome"
            )
        ] * count
        if unknown.first_event is None:
            return unavailable
        try:
            position = await self._position_of(unknown.first_event)
        except (psycopg.Error, OSError) as exc:
            log.error("commit_outcome_unknown", error=str(exc))
            return unavailable
        UNKNOWN_COMMITS.labels("committed" if position else "not-committed").inc()
        log.warning("commit_outcome_resolved", committed=position is not None)
        if position is None:
            return unavailable
        return unknown.answers(position - 1)

    async def _position_of(self, event_id: UUID) -> int | None:
        """Where the event is in the log, once the transaction that wrote it has ended: the
        head's row lock is held by an append until its COMMIT is done, so taking it waits for a
        commit that is still landing (read at once, it would be taken for one that failed)."""
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute("SET LOCAL lock_timeout = '5s'")
            await conn.execute("SELECT position FROM event_head FOR UPDATE")
            row = await (
                await conn.execute("SELECT position FROM events WHERE event_id = %s", (event_id,))
            ).fetchone()
        return int(row[0]) if row else None

    async def _alone(self, item: WorkItem) -> Outcome:
        error: Exception | None = None
        for attempt in range(self._attempts):
            if attempt:
                await asyncio.sleep(random.uniform(0, 0.002 * 2**attempt))
            try:
                return (await self._once([item]))[0]
            except BatchOutcomeUnknown as unknown:
                return (await self._resolve(unknown, 1))[0]
            except _RETRYABLE as exc:
                error = exc
            except (psycopg.Error, EventStoreError) as exc:
                if _unavailable(exc):
                    return StoreUnavailable("the event store is unavailable")
                log.error("command_failed", error=str(exc))
                return EventStoreError(str(exc))
        log.warning("command_gave_up", error=str(error))
        return ConcurrencyError(f"the stream kept changing: {error}")


def _unavailable(exc: Exception) -> bool:
    if isinstance(exc, StoreUnavailable):
        return True
    return isinstance(exc, psycopg.OperationalError) and not isinstance(exc, _RETRYABLE)
