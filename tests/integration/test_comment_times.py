"""A posted comment's time is one time: the reply's, the event's and so every read model's."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
from psycopg_pool import AsyncConnectionPool

from command_api.deciders.comment import PostComment
from command_api.executor import CommandExecutor
from command_api.work import Accepted, WorkItem
from event_store.postgres import PostgresEventStore
from schemas.api import CommentCreated


async def test_the_reply_names_the_time_the_event_was_recorded_with(
    apool: AsyncConnectionPool[Any],
) -> None:
    posts = [
        PostComment(comment_id=uuid.uuid4(), commentable_id="t", author_id="a", content="x")
        for _ in range(5)
    ]
    outcomes = await CommandExecutor(apool, 3600).run(
        [WorkItem(command=post, user_id="a") for post in posts]
    )
    store = PostgresEventStore(apool)
    histories = await store.read_comments([str(post.comment_id) for post in posts])
    for post, outcome in zip(posts, outcomes, strict=True):
        assert isinstance(outcome, Accepted), outcome
        reply = msgspec.json.decode(outcome.body, type=CommentCreated)
        [event] = histories[str(post.comment_id)]
        assert event.occurred_at == reply.created_at  # to the microsecond
