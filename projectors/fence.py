"""The switch fence: live projectors apply under a shared lock, a rebuild switches under an
exclusive one.

While a rebuild holds it, no live batch is half-applied: the rebuild catches the new generation
up to the head, switches, and lets go, so the new generation is never behind the old one. A
PostgreSQL advisory lock (two-key form, its own key space) on a connection of the fence's own;
a lost connection releases it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, LiteralString

import psycopg

# The first key, 0x7A11, marks fence locks; the second is the projection's name hashed.
_SHARED = (
    "SELECT pg_advisory_lock_shared(31249, hashtext(%s))",
    "SELECT pg_advisory_unlock_shared(31249, hashtext(%s))",
)
_EXCLUSIVE = (
    "SELECT pg_advisory_lock(31249, hashtext(%s))",
    "SELECT pg_advisory_unlock(31249, hashtext(%s))",
)


class SwitchFence:
    """One projection's fence."""

    def __init__(self, dsn: str, projection: str) -> None:
        self._dsn = dsn
        self._projection = projection
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = await psycopg.AsyncConnection.connect(self._dsn, autocommit=True)
        return self._conn

    @contextlib.asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        """Held while a live batch is applied."""
        async with self._held(*_SHARED):
            yield

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """Held by a rebuild while it catches up and switches; waits for live batches."""
        async with self._held(*_EXCLUSIVE):
            yield

    @contextlib.asynccontextmanager
    async def _held(self, lock: LiteralString, unlock: LiteralString) -> AsyncIterator[None]:
        conn = await self._connection()
        await conn.execute(lock, (self._projection,))
        try:
            yield
        finally:
            with contextlib.suppress(psycopg.Error):  # a dead connection released it already
                await conn.execute(unlock, (self._projection,))

    async def close(self) -> None:
        """Close the fence's connection."""
        if self._conn is not None:
            await self._conn.close()
