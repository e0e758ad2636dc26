"""One contract for every event store: in-memory and PostgreSQL."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import pytest
from psycopg_pool import AsyncConnectionPool

from event_store.errors import ConcurrencyError
from event_store.memory import InMemoryEventStore
from event_store.port import EventStore
from event_store.postgres import PostgresEventStore
from schemas.events import CommentPosted, VoteCast, VoteChanged

CID = uuid4()


def posted(n: int = 0) -> CommentPosted:
    return CommentPosted(comment_id=CID, commentable_id="p", author_id="a", content=f"c{n}")


class EventStoreContract:
    @pytest.fixture
    def store(self) -> EventStore:
        raise NotImplementedError

    async def test_appended_events_get_increasing_positions_and_versions(
        self, store: EventStore
    ) -> None:
        first = await store.append("s-1", 0, [posted(1)])
        second = await store.append("s-1", 1, [posted(2), posted(3)])
        assert second[0] > first[-1] and second == [second[0], second[0] + 1]
        stream = await store.read_stream("s-1")
        assert [e.stream_version for e in stream] == [1, 2, 3]
        assert [e.event for e in stream] == [posted(1), posted(2), posted(3)]

    async def test_a_stale_expected_version_is_a_concurrency_error(self, store: EventStore) -> None:
        await store.append("s-2", 0, [posted()])
        with pytest.raises(ConcurrencyError):
            await store.append("s-2", 0, [posted()])
        with pytest.raises(ConcurrencyError):
            await store.append("s-2", 5, [posted()])
        assert len(await store.read_stream("s-2")) == 1

    async def test_read_all_returns_everything_after_a_position_in_batches(
        self, store: EventStore
    ) -> None:
        vote = VoteCast(comment_id=CID, commentable_id="p", user_id="u", value=1, previous=0)
        change = VoteChanged(comment_id=CID, commentable_id="p", user_id="u", value=-1, previous=1)
        positions = await store.append("a", 0, [posted(), posted()])
        positions += await store.append("b", 0, [vote, change], correlation_id="req-1")
        batches = [batch async for batch in store.read_all(after=positions[0], batch_size=2)]
        assert [len(b) for b in batches] == [2, 1]
        seen = [e for b in batches for e in b]
        assert [e.position for e in seen] == positions[1:]
        assert seen[-1].event == change and seen[-1].correlation_id == "req-1"
        assert await store.head() == positions[-1]

    async def test_a_comments_history_holds_its_own_events_and_its_votes_in_order(
        self, store: EventStore
    ) -> None:
        other = uuid4()
        vote = VoteCast(comment_id=CID, commentable_id="p", user_id="u", value=1, previous=0)
        elsewhere = CommentPosted(comment_id=other, commentable_id="p", author_id="a", content="o")
        mine = await store.append(f"comment-{CID}", 0, [posted()])
        await store.append(f"comment-{other}", 0, [elsewhere])
        mine += await store.append(f"vote-{CID}-u", 0, [vote])
        histories = await store.read_comments([str(CID)])
        assert [e.position for e in histories[str(CID)]] == mine
        assert (await store.read_comments([str(CID)], until=mine[0]))[str(CID)][-1].event == (
            posted()
        )
        touched = await store.comments_touched(0, await store.head(), limit=10)
        assert touched == [str(CID), str(other)]  # most recently touched first
        # Each comment from its own starting point: after its first event, only its vote; the
        # other one whole.
        tails = await store.read_comments([str(CID), str(other)], after={str(CID): mine[0]})
        assert [e.position for e in tails[str(CID)]] == mine[1:]
        assert [e.event for e in tails[str(other)]] == [elsewhere]

    async def test_comments_after_pages_through_every_comment_in_id_order(
        self, store: EventStore
    ) -> None:
        ids = sorted(str(uuid4()) for _ in range(3))
        for comment in ids:
            event = CommentPosted(
                comment_id=comment, commentable_id="p", author_id="a", content="x"
            )
            await store.append(f"comment-{comment}", 0, [event])
        first = await store.comments_after("", 2)
        rest = await store.comments_after(first[-1], 2)
        assert first + rest == ids


class TestInMemoryEventStore(EventStoreContract):
    @pytest.fixture
    def store(self) -> EventStore:
        return InMemoryEventStore()


class TestPostgresEventStore(EventStoreContract):
    @pytest.fixture
    def store(self, clean_store: AsyncConnectionPool[Any]) -> EventStore:
        return PostgresEventStore(clean_store)

    async def test_every_event_has_an_outbox_row_keyed_by_comment(
        self, store: EventStore, clean_store: AsyncConnectionPool[Any]
    ) -> None:
        positions = await store.append("s-3", 0, [posted(), posted()])
        async with clean_store.connection() as conn:
            rows = await (
                await conn.execute("SELECT position, key FROM outbox ORDER BY 1")
            ).fetchall()
        assert rows == [(p, str(CID)) for p in positions]
