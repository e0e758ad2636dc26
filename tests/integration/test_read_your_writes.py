"""A comment read with ``min_position`` waits for both read models it merges.

The body comes from Elasticsearch (the comments projector), the counts from Redis (another
projector), and either may be behind the other.
"""

from __future__ import annotations

import uuid
from typing import Any

from litestar.testing import AsyncTestClient
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from event_store.port import PendingEvent, stream_of_comment, stream_of_vote
from event_store.postgres import PostgresEventStore, append_pending
from kernel.auth import mint_token
from kernel.settings import Settings
from projectors import positions
from projectors.es_comments import EsCommentsProjection
from projectors.partition_tracker import PartitionTracker
from projectors.progress import ProgressBoard
from projectors.redis_scores import RedisScoresProjection
from schemas.events import CommentPosted, VoteCast
from tally.bootstrap import open_stores, query_app
from tests.pipeline import answered, isolated


async def test_a_comment_read_waits_for_its_body_as_well_as_its_counts(
    settings: Settings, apool: AsyncConnectionPool[Any], redis: Redis
) -> None:
    config = isolated(
        settings, es_comments_alias=f"test-comments-{uuid.uuid4().hex[:8]}", read_wait_ms=300
    )
    comment_id = uuid.uuid4()
    posted = CommentPosted(
        comment_id=comment_id,
        commentable_id="post-1",
        author_id="alice",
        content="read your writes",
    )
    vote = VoteCast(
        comment_id=comment_id, commentable_id="post-1", user_id="bob", value=1, previous=0
    )
    async with apool.connection() as conn, conn.transaction(), conn.cursor() as cur:
        await append_pending(
            cur,
            [
                PendingEvent(
                    stream_id=stream_of_comment(comment_id), stream_version=1, event=posted
                ),
                PendingEvent(
                    stream_id=stream_of_vote(comment_id, "bob"), stream_version=1, event=vote
                ),
            ],
        )
    envelopes = [e async for batch in PostgresEventStore(apool).read_all() for e in batch]
    position = envelopes[-1].position
    await answered(config, redis, position)
    scores = RedisScoresProjection(redis, config.redis_generation)
    await scores.mark_intact()
    await scores.apply(envelopes)
    async with open_stores(config, es_timeout=30) as (_, es):
        comments = EsCommentsProjection(es, config.es_comments_alias)
        await comments.setup()
        try:
            async with AsyncTestClient(query_app(config)) as client:
                url = f"/api/comments/{comment_id}"
                # Redis has the vote, Elasticsearch nothing yet: not yet visible, not half.
                early = await client.get(url, params={"min_position": position})
                assert early.status_code == 504, early.text
                assert early.headers["content-type"].startswith("application/problem+json")

                await comments.apply(envelopes[:1])  # the body, not yet the vote
                behind = await client.get(url, params={"min_position": position})
                assert behind.status_code == 504, behind.text

                await comments.apply(envelopes[1:])
                read = await client.get(url, params={"min_position": position})
                assert read.status_code == 200, read.text
                body = read.json()
                assert (body["content"], body["score"]) == ("read your writes", 1)
                assert int(read.headers["x-tally-position"]) >= position
        finally:
            await es.indices.delete(index=f"{config.es_comments_alias}-v1")


async def test_min_position_is_a_session_token_while_one_partition_is_behind(
    settings: Settings, apool: AsyncConnectionPool[Any], redis: Redis
) -> None:
    """Two processes share a projection's three partitions; the one holding comment A's
    partition is behind. A client that voted on A (position ``a``) and passes ``min_position=a``
    must never get an answer without that vote: lists, batches and the viewer's votes wait (504)
    until the lagging partition catches up; comment B, whose own events are past ``a``, answers
    at once."""
    config = isolated(settings, read_wait_ms=300)
    projection = f"redis-{uuid.uuid4().hex[:8]}"  # its partition rows only
    a_id, b_id = uuid.uuid4(), uuid.uuid4()
    pending = []
    for comment_id in (a_id, b_id):
        posted = CommentPosted(
            comment_id=comment_id, commentable_id="post-s", author_id="alice", content="x"
        )
        pending.append(
            PendingEvent(stream_id=stream_of_comment(comment_id), stream_version=1, event=posted)
        )
    for comment_id in (a_id, b_id):  # A's vote, then B's: b > a
        vote = VoteCast(
            comment_id=comment_id, commentable_id="post-s", user_id="bob", value=1, previous=0
        )
        pending.append(
            PendingEvent(stream_id=stream_of_vote(comment_id, "bob"), stream_version=1, event=vote)
        )
    async with apool.connection() as conn, conn.transaction(), conn.cursor() as cur:
        await append_pending(cur, pending)
    envelopes = [e async for batch in PostgresEventStore(apool).read_all() for e in batch]
    envelopes = envelopes[-4:]
    a_vote, b_vote = envelopes[2], envelopes[3]
    scores = RedisScoresProjection(redis, config.redis_generation)
    await scores.mark_intact()
    # The process of partitions 0 and 1 (B's) applied everything; the one of partition 2 (A's)
    # only the posts. Each saves its partitions; the mark is the least over all three.
    await scores.apply([envelopes[0], envelopes[1], b_vote])
    board = ProgressBoard(redis, config.kafka_group_prefix)
    ahead = PartitionTracker(1, 3, {0: b_vote.position, 1: b_vote.position})
    mark = await positions.save(apool, projection, ahead, new_epoch=True)
    assert mark == 0  # partition 2 has reported nothing yet: nothing is certain
    behind = PartitionTracker(1, 3, {2: envelopes[1].position})
    mark = await positions.save(apool, projection, behind, new_epoch=False)
    assert mark == envelopes[1].position < a_vote.position
    await board.publish("redis", mark)
    await answered(config, redis, b_vote.position)

    bob = {"Authorization": f"Bearer {mint_token('bob', config.jwt_secret, 600)}"}
    session = {"min_position": a_vote.position}
    async with AsyncTestClient(query_app(config)) as client:
        b_read = await client.get(f"/api/comments/{b_id}/score", params=session)
        assert b_read.status_code == 200 and b_read.json()["up"] == 1  # its own events: past a
        waits = [
            await client.get("/api/commentables/post-s/comments", params=session),
            await client.get("/api/scores", params={"ids": f"{a_id},{b_id}", **session}),
            await client.get(
                "/api/me/votes", params={"comment_ids": str(a_id), **session}, headers=bob
            ),
            await client.get(f"/api/comments/{a_id}/score", params=session),
        ]
        assert [r.status_code for r in waits] == [504] * 4, [r.text for r in waits]

        # The lagging process catches up: every read now shows A's vote.
        await scores.apply([a_vote])
        caught_up = PartitionTracker(1, 3, {2: a_vote.position})
        await board.publish("redis", await positions.save(apool, projection, caught_up, False))
        listed = await client.get("/api/commentables/post-s/comments", params=session, headers=bob)
        assert listed.status_code == 200, listed.text
        by_id = {c["id"]: c for c in listed.json()["comments"]}
        assert by_id[str(a_id)]["up"] == 1 and by_id[str(a_id)]["my_vote"] == 1
        batch = await client.get("/api/scores", params={"ids": f"{a_id},{b_id}", **session})
        assert [s["up"] for s in batch.json()["scores"]] == [1, 1]
        mine = await client.get(
            "/api/me/votes", params={"comment_ids": str(a_id), **session}, headers=bob
        )
        assert mine.json() == {"votes": {str(a_id): 1}}
