"""A rebuild ranks every comment once at the end of its bulk pass (``RedisRebuild.rank_all``):
its rankings equal, member for member and score for score, those the live projection keeps
up to date event by event, in long lists (more members than one ZADD takes), in reply lists,
and for deleted comments with and without replies."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from redis.asyncio import Redis

from projectors import redis_keys
from projectors.ranking import SORTS
from projectors.redis_scores import RedisRebuild, RedisScoresProjection
from schemas.envelope import Envelope
from schemas.events import CommentDeleted, CommentPosted, Event, VoteCast

START = datetime(2026, 11, 28, tzinfo=UTC)


def history(commentable: str) -> tuple[list[Envelope], list[uuid.UUID | None]]:
    """1,100 top-level comments, 600 replies to the first, votes of every kind of balance, a
    deleted comment without replies and one with; returns the envelopes and every list's
    parent (``None``: the top level)."""
    events: list[Event] = []
    tops = [uuid.uuid4() for _ in range(1_100)]
    replies = [uuid.uuid4() for _ in range(600)]
    for n, comment_id in enumerate(tops):
        events.append(
            CommentPosted(
                comment_id=comment_id, commentable_id=commentable, author_id="a", content=str(n)
            )
        )
    for comment_id in replies:
        events.append(
            CommentPosted(
                comment_id=comment_id,
                commentable_id=commentable,
                author_id="a",
                content="r",
                parent_id=tops[0],
                depth=1,
            )
        )
    events.append(
        CommentPosted(
            comment_id=uuid.uuid4(),
            commentable_id=commentable,
            author_id="a",
            content="r",
            parent_id=tops[2],
            depth=1,
        )
    )
    for n, comment_id in enumerate(tops + replies):
        parent = tops[0] if n >= len(tops) else None
        for user in range(n % 7):
            value = 1 if (n + user) % 3 else -1
            events.append(
                VoteCast(
                    comment_id=comment_id,
                    commentable_id=commentable,
                    parent_id=parent,
                    user_id=f"u{user}",
                    value=value,
                    previous=0,
                )
            )
    for deleted in (tops[1], tops[2]):  # tops[2] has a reply: it stays in its list
        events.append(CommentDeleted(comment_id=deleted, commentable_id=commentable, author_id="a"))
    envelopes = [
        Envelope(
            event_id=uuid.uuid4(),
            stream_id=f"comment-{e.comment_id}",
            stream_version=1,
            position=n + 1,
            occurred_at=START + timedelta(seconds=n),
            event=e,
        )
        for n, e in enumerate(events)
    ]
    return envelopes, [None, tops[0], tops[2]]


async def rankings(
    redis: Redis, generation: str, commentable: str, lists: list[uuid.UUID | None]
) -> dict[str, list[tuple[bytes, float]]]:
    found = {}
    for parent in lists:
        for sort in SORTS:
            key = redis_keys.ranking_key(generation, commentable, sort, parent)
            found[f"{parent}:{sort}"] = await redis.zrange(key, 0, -1, withscores=True)
    return found


async def test_ranking_at_the_end_of_the_bulk_pass_equals_ranking_as_events_come(
    redis: Redis,
) -> None:
    commentable = f"rank-{uuid.uuid4().hex[:8]}"
    envelopes, lists = history(commentable)
    live, rebuilt = f"l{uuid.uuid4().hex[:8]}", f"b{uuid.uuid4().hex[:8]}"
    projection = RedisScoresProjection(redis, live)
    await projection.setup()
    await projection.apply_to(live, envelopes, publish=False)
    rebuild = RedisRebuild(redis, rebuilt)
    await rebuild.setup()
    for at in range(0, len(envelopes), 1_000):
        await rebuild.apply(envelopes[at : at + 1_000])
    assert await redis.zcard(redis_keys.ranking_key(rebuilt, commentable, "top")) == 0
    assert await rebuild.rank_all() == 1_701

    expected = await rankings(redis, live, commentable, lists)
    got = await rankings(redis, rebuilt, commentable, lists)
    assert len(expected["None:top"]) == 1_099  # the deleted one without replies left
    assert len(expected[f"{lists[1]}:hot"]) == 600 and len(expected[f"{lists[2]}:new"]) == 1
    assert got == expected
