"""``stream_log``: the log in position order, in batches, read with COPY and parsed here."""

from __future__ import annotations

import uuid
from typing import Any

from psycopg_pool import AsyncConnectionPool

from event_store import bulk_read
from event_store.port import PendingEvent, stream_of_comment
from event_store.postgres import append_pending
from schemas.events import CommentPosted


async def test_a_range_comes_whole_in_order_across_batches_with_escaped_text(
    apool: AsyncConnectionPool[Any],
) -> None:
    events = [
        CommentPosted(
            comment_id=uuid.uuid4(),
            commentable_id="bulk",
            author_id="alice",
            content=f'tab\\there, a quote " and é {n}',
        )
        for n in range(25)
    ]
    async with apool.connection() as conn, conn.transaction(), conn.cursor() as cur:
        positions = await append_pending(
            cur,
            [
                PendingEvent(stream_id=stream_of_comment(e.comment_id), stream_version=1, event=e)
                for e in events
            ],
        )
    after, until = positions[2], positions[19]  # positions[3] .. positions[19]
    async with apool.connection() as conn:
        batches = [b async for b in bulk_read.stream_events(conn, after, until, batch_size=7)]
    assert [len(b) for b in batches] == [7, 7, 3]
    read = [e for b in batches for e in b]
    assert [e.position for e in read] == positions[3:20]
    assert [e.event for e in read] == events[3:20]
    assert all(e.occurred_at.tzinfo is not None for e in read)

    async with apool.connection() as conn:
        nothing = [b async for b in bulk_read.stream_events(conn, positions[-1], 2**62)]
        tail = [b async for b in bulk_read.stream_events(conn, positions[-2], 2**62)]
    assert nothing == [] and [e.event for b in tail for e in b] == events[-1:]


async def test_ranges_across_many_chunks_come_whole_and_in_order(
    apool: AsyncConnectionPool[Any],
) -> None:
    events = [
        CommentPosted(comment_id=uuid.uuid4(), commentable_id="bulk", author_id="a", content="x")
        for _ in range(2 * bulk_read.CHUNK + 300)
    ]
    async with apool.connection() as conn, conn.transaction(), conn.cursor() as cur:
        positions = await append_pending(
            cur,
            [
                PendingEvent(stream_id=stream_of_comment(e.comment_id), stream_version=1, event=e)
                for e in events
            ],
        )
    # Neither end on a chunk boundary, batches that straddle chunks.
    after, until = positions[10], positions[-5]
    async with apool.connection() as conn:
        batches = [b async for b in bulk_read.stream_events(conn, after, until, batch_size=700)]
    read = [e for b in batches for e in b]
    assert [e.position for e in read] == positions[11:-4]
    assert [e.event for e in read] == events[11:-4]
    assert all(len(b) == 700 for b in batches[:-1])


async def test_entries_hold_what_the_envelopes_hold_of_position_time_and_event(
    apool: AsyncConnectionPool[Any],
) -> None:
    events = [
        CommentPosted(
            comment_id=uuid.uuid4(), commentable_id="bulk", author_id="a", content=f'\\ " {n}'
        )
        for n in range(bulk_read.CHUNK + 10)
    ]
    async with apool.connection() as conn, conn.transaction(), conn.cursor() as cur:
        positions = await append_pending(
            cur,
            [
                PendingEvent(stream_id=stream_of_comment(e.comment_id), stream_version=1, event=e)
                for e in events
            ],
        )
    after = positions[0] - 1
    async with apool.connection() as conn:
        whole = [
            (e.position, e.occurred_at, e.event)
            async for b in bulk_read.stream_events(conn, after, positions[-1])
            for e in b
        ]
        lean = [
            (e.position, e.occurred_at, e.event)
            async for b in bulk_read.stream_log(
                conn, after, positions[-1], bulk_read.ENTRIES, batch_size=300
            )
            for e in b
        ]
    assert lean == whole and [e for _, _, e in lean] == events
