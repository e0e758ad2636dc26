"""Run batches against PostgreSQL; when a batch fails as a whole, run its commands one by one.

So one bad command never fails the others: a conflict or deadlock that aborts the shared
transaction is retried per command, and only the command that still fails gets the error.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import Any

import psycopg
import structlog
from psycopg_pool import AsyncConnectionPool

from command_api.unit_of_work import Outcome, WorkItem, run_batch
from event_store.errors import ConcurrencyError, EventStoreError

log = structlog.get_logger(__name__)

_RETRYABLE = (
    ConcurrencyError,
    psycopg.errors.DeadlockDetected,
    psycopg.errors.SerializationFailure,
    psycopg.errors.UniqueViolation,
)


class StoreUnavailable(EventStoreError):
    """PostgreSQL cannot be reached; nothing was written."""


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

    async def _alone(self, item: WorkItem) -> Outcome:
        error: Exception | None = None
        for attempt in range(self._attempts):
            if attempt:
                await asyncio.sleep(random.uniform(0, 0.002 * 2**attempt))
            try:
                return (await self._once([item]))[0]
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
    return isinstance(exc, psycopg.OperationalError) and not isinstance(exc, _RETRYABLE)
