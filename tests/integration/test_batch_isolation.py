"""A poisoned command in a group-commit batch, or a poisoned key in a rate-limit tick, is
answered alone: every other item gets what it would have got had it come alone."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from command_api.deciders.comment import PostComment
from command_api.deciders.vote import CastVote
from command_api.executor import CommandExecutor
from command_api.group_commit import GroupCommitter
from command_api.rate_limit import RateLimiter
from command_api.work import Accepted, WorkItem
from kernel.limits import Limit
from schemas.api import VoteRecorded

POISONS = ["surrogate-user", "nul-content", "surrogate-content", "unknown-comment"]


def _poison(kind: str, comment: uuid.UUID) -> WorkItem:
    if kind == "surrogate-user":
        user = f"x\ud800{uuid.uuid4().hex[:4]}"
        return WorkItem(command=CastVote(comment_id=comment, user_id=user, value=1), user_id=user)
    if kind == "unknown-comment":
        return WorkItem(
            command=CastVote(comment_id=uuid.uuid4(), user_id="lost", value=1), user_id="lost"
        )
    content = "nul\x00inside" if kind == "nul-content" else "half \udc80 a pair"
    post = PostComment(
        comment_id=uuid.uuid4(), commentable_id="iso", author_id="mallory", content=content
    )
    return WorkItem(command=post, user_id="mallory")


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    honest=st.lists(st.sampled_from([-1, 1]), min_size=1, max_size=30),
    poison=st.sampled_from(POISONS),
    at=st.floats(min_value=0, max_value=1),
)
async def test_a_poisoned_command_fails_alone_and_the_batch_around_it_commits(
    apool: AsyncConnectionPool[Any], honest: list[int], poison: str, at: float
) -> None:
    executor = CommandExecutor(apool, 3600)
    comment = uuid.uuid4()
    post = PostComment(comment_id=comment, commentable_id="iso", author_id="a", content="x")
    [posted] = await executor.run([WorkItem(command=post, user_id="a")])
    assert isinstance(posted, Accepted)
    tag = uuid.uuid4().hex[:6]
    items = [
        WorkItem(
            command=CastVote(comment_id=comment, user_id=f"{tag}-{n}", value=v),
            user_id=f"{tag}-{n}",
        )
        for n, v in enumerate(honest)
    ]
    where = round(at * len(items))
    items.insert(where, _poison(poison, comment))
    committer = GroupCommitter(executor.run, max_wait_ms=20, max_batch=256, workers=1)
    await committer.start()
    try:
        outcomes = await asyncio.gather(*(committer.submit(item) for item in items))
    finally:
        await committer.stop()
    poisoned = outcomes.pop(where)
    assert not isinstance(poisoned, Accepted), poisoned
    for value, outcome in zip(honest, outcomes, strict=True):
        assert isinstance(outcome, Accepted), outcome
        reply = msgspec.json.decode(outcome.body, type=VoteRecorded)
        assert (reply.value, reply.previous) == (value, 0)  # as if it had come alone
    async with apool.connection() as conn:
        row = await (
            await conn.execute("SELECT count(*) FROM votes WHERE comment_id = %s", (comment,))
        ).fetchone()
    assert row == (len(honest),)


async def test_a_key_that_cannot_be_sent_to_redis_fails_only_its_own_check(redis: Redis) -> None:
    limiter = RateLimiter(redis, {"vote": Limit(100, 60)}, timeout=1.0)
    users = [f"ok-{uuid.uuid4().hex[:6]}-{n}" for n in range(20)]
    checks = [limiter.check(u, "vote") for u in users[:10]]
    checks.append(limiter.check("x\ud800", "vote"))  # cannot be encoded: only it fails
    checks += [limiter.check(u, "vote") for u in users[10:]]
    results = await asyncio.gather(*checks, return_exceptions=True)
    assert isinstance(results.pop(10), UnicodeEncodeError)
    assert all(q is not None and q.remaining == 99 for q in results), results
