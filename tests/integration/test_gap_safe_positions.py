"""Guarantee 2: a reader that has seen position P never later sees a smaller position."""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Any
from uuid import uuid4

from psycopg_pool import AsyncConnectionPool

from event_store.errors import ConcurrencyError
from event_store.port import PendingEvent
from event_store.postgres import PostgresEventStore, append_pending
from schemas.events import CommentPosted

WRITERS = 24
APPENDS_PER_WRITER = 40


async def test_a_tailing_reader_never_sees_a_position_below_one_it_saw(
    clean_store: AsyncConnectionPool[Any],
) -> None:
    store = PostgresEventStore(clean_store)
    done = asyncio.Event()

    async def writer(n: int) -> None:
        for i in range(APPENDS_PER_WRITER):
            event = CommentPosted(
                comment_id=uuid4(), commentable_id="p", author_id=f"w{n}", content=str(i)
            )
            # Some appends take positions, then fail on a taken stream version and roll back:
            # they must leave no trace.
            if i and random.random() < 0.1:
                duplicate = PendingEvent(stream_id=f"w{n}-0", stream_version=1, event=event)
                async with clean_store.connection() as conn:
                    with contextlib.suppress(ConcurrencyError):
                        async with conn.transaction(), conn.cursor() as cur:
                            await append_pending(cur, [duplicate])
                continue
            await store.append(f"w{n}-{i}", 0, [event, event])
            await asyncio.sleep(random.random() / 1000)

    observed: list[int] = []

    async def reader() -> None:
        async with clean_store.connection() as conn:
            await conn.set_autocommit(True)
            while True:
                finished = done.is_set()
                last = observed[-1] if observed else 0
                cur = await conn.execute(
                    "SELECT position FROM events WHERE position > %s ORDER BY position", (last,)
                )
                observed.extend(row[0] for row in await cur.fetchall())
                if finished:
                    return

    tail = asyncio.create_task(reader())
    await asyncio.gather(*(writer(n) for n in range(WRITERS)))
    done.set()
    await tail

    head = await store.head()
    assert head > WRITERS * APPENDS_PER_WRITER  # the writers really wrote concurrently
    # Every read saw positions in order, none arrived late, and there is no hole at all.
    assert observed == list(range(1, head + 1))
