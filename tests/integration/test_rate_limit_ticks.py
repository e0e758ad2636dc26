"""Checks made in one event-loop tick share one script call (on a cluster, one per bucket):
each bucket still counts exactly as if its checks had come one by one, in order."""

from __future__ import annotations

import asyncio
import uuid

from redis.asyncio import Redis

from command_api.rate_limit import RateLimited, RateLimiter
from kernel.limits import Limit, Quota


async def _in_one_tick(limiter: RateLimiter, users: list[str]) -> list[Quota | Exception | None]:
    checks = [limiter.check(user, "vote") for user in users]
    return await asyncio.gather(*checks, return_exceptions=True)


async def test_a_tick_of_checks_counts_each_bucket_in_order(redis: Redis) -> None:
    limiter = RateLimiter(redis, {"vote": Limit(3, 60), "comment": Limit(1, 60)}, timeout=5)
    run = uuid.uuid4().hex[:8]
    alice, bob, carol = (f"{name}-{run}" for name in ("alice", "bob", "carol"))
    # Alice five times, Bob twice, Carol once, interleaved: all in one tick.
    users = [alice, bob, alice, carol, alice, bob, alice, alice]
    results = await _in_one_tick(limiter, users)

    alice_results = [r for u, r in zip(users, results, strict=True) if u == alice]
    assert [r.remaining for r in alice_results[:3] if isinstance(r, Quota)] == [2, 1, 0]
    assert all(isinstance(r, RateLimited) for r in alice_results[3:])
    refused = alice_results[3]
    assert isinstance(refused, RateLimited) and 1 <= refused.retry_after <= 20
    bob_and_carol = [r for u, r in zip(users, results, strict=True) if u != alice]
    assert [r.remaining for r in bob_and_carol if isinstance(r, Quota)] == [2, 2, 1]
    # Another action has a bucket of its own.
    comment = await limiter.check(alice, "comment")
    assert comment is not None and comment.remaining == 0


async def test_refunds_in_the_same_tick_as_checks_give_requests_back(redis: Redis) -> None:
    limiter = RateLimiter(redis, {"vote": Limit(2, 60)}, timeout=5)
    user = f"dave-{uuid.uuid4().hex[:8]}"
    first = await _in_one_tick(limiter, [user, user])
    assert [q.remaining for q in first if isinstance(q, Quota)] == [1, 0]
    # Two refunds and one check in one tick: the check sees both refunds before it.
    refunds = [limiter.refund(user, "vote"), limiter.refund(user, "vote")]
    *_, quota = await asyncio.gather(*refunds, limiter.check(user, "vote"))
    assert isinstance(quota, Quota) and quota.remaining == 1
    second = await _in_one_tick(limiter, [user, user])
    assert isinstance(second[0], Quota) and second[0].remaining == 0
    assert isinstance(second[1], RateLimited)
