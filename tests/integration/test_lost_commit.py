"""A COMMIT whose reply was lost is read back only once that transaction has ended: a commit
still landing is not taken for one that failed."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from command_api.executor import CommandExecutor
from kernel.settings import Settings


async def test_the_read_back_waits_for_a_commit_still_landing(
    settings: Settings, apool: AsyncConnectionPool[Any]
) -> None:
    event_id = uuid.uuid4()
    async with await psycopg.AsyncConnection.connect(settings.pg_dsn) as writer:
        # An append whose client lost the COMMIT's reply: its transaction is still open.
        row = await (
            await writer.execute("UPDATE event_head SET position = position + 1 RETURNING position")
        ).fetchone()
        assert row is not None
        position = int(row[0])
        await writer.execute(
            "INSERT INTO events (position, event_id, stream_id, stream_version, type,"
            " schema_version, data) VALUES (%s, %s, 'lost-commit', 1, 'VoteCast', 1, '{}')",
            (position, event_id),
        )
        executor = CommandExecutor(apool, 3600)
        reading = asyncio.create_task(executor._position_of(event_id))
        await asyncio.sleep(0.5)
        assert not reading.done()  # it waits for the open transaction instead of answering
        started = time.monotonic()
        await writer.commit()  # the commit lands a moment later
        found = await asyncio.wait_for(reading, 10)
    assert found == position
    assert time.monotonic() - started < 5
