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
from kernel.settings import Settings
from projectors.es_comments import EsCommentsProjection
from projectors.redis_scores import RedisScoresProjection
from schemas.events import CommentPosted, VoteCast
from tally.bootstrap import open_stores, query_app
from tests.pipeline import isolated


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
