"""Threads in the Redis projection when partitions disagree on order.

A reply and its parent's delete live on different partitions (keyed by comment id), so Redis
can apply the delete first, when the parent has no replies yet and leaves its list. The reply
must bring it back as "[deleted]", or the reply could never be reached from the list.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from redis.asyncio import Redis

from kernel.settings import Settings
from projectors.redis_keys import ranking_key
from projectors.redis_scores import RedisScoresProjection
from schemas.envelope import Envelope
from schemas.events import CommentDeleted, CommentPosted, Event
from tests.pipeline import isolated


def envelope(position: int, event: Event) -> Envelope:
    return Envelope(
        event_id=uuid.uuid4(),
        stream_id=f"comment-{event.comment_id}",
        stream_version=1,
        position=position,
        occurred_at=datetime.now(UTC),
        event=event,
    )


async def test_a_reply_applied_after_its_parents_delete_brings_the_parent_back(
    settings: Settings, redis: Redis
) -> None:
    config = isolated(settings)
    parent, reply = uuid.uuid4(), uuid.uuid4()
    thread = f"t-{uuid.uuid4().hex[:8]}"
    posted = CommentPosted(comment_id=parent, commentable_id=thread, author_id="a", content="p")
    answered = CommentPosted(
        comment_id=reply,
        commentable_id=thread,
        author_id="b",
        content="r",
        parent_id=parent,
        depth=1,
    )
    deleted = CommentDeleted(comment_id=parent, commentable_id=thread, author_id="a")
    scores = RedisScoresProjection(redis, config.redis_generation)
    await scores.setup()
    await scores.mark_intact()
    # Log order: post (1), reply (2), delete (3); Redis gets the parent's partition first.
    await scores.apply([envelope(1, posted), envelope(3, deleted)])
    top = ranking_key(config.redis_generation, thread, "top")
    assert await redis.zrange(top, 0, -1) == []  # deleted without replies: out of the list
    await scores.apply([envelope(2, answered)])
    assert await redis.zrange(top, 0, -1) == [str(parent).encode()]
    replies = ranking_key(config.redis_generation, thread, "top", parent)
    assert await redis.zrange(replies, 0, -1) == [str(reply).encode()]
