"""The rate limiter's timeout is for a silent Redis, not for a late event loop.

Under load a worker's loop can run late: Redis answered in time, but the loop only got to the
answer after the limiter's timeout had expired too. That answer must be used; failing open
there (and skipping every check for the pause after it) would switch the limit off exactly
when a worker is busiest.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from redis.asyncio import Redis

from command_api.rate_limit import LIMITER_ERRORS, RateLimiter, bucket_key
from kernel.limits import Limit
from kernel.settings import Settings
from tally.clients import redis_client

# Keeps Redis busy for about ``ARGV[1]`` ms, so that a check sent now is answered after it. Run
# with the checked user's bucket as its key, so that on a cluster it blocks that key's node.
_BUSY = """
local t = redis.call('TIME')
local stop = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000 + tonumber(ARGV[1])
repeat t = redis.call('TIME') until tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000 >= stop
return 1
"""
TIMEOUT_S = 0.05


def _errors() -> float:
    return LIMITER_ERRORS._value.get()  # type: ignore[attr-defined, no-any-return]


async def _warm_limiter(redis: Redis) -> RateLimiter:
    limiter = RateLimiter(redis, {"vote": Limit(5, 60)}, timeout=TIMEOUT_S)
    await limiter.check("warm-up", "vote")  # scripts loaded, connection open
    return limiter


async def _keep_busy(other: Redis, user: str, ms: int) -> asyncio.Future[Any]:
    """Redis (on a cluster: ``user``'s bucket's node) busy for ``ms`` from now on."""
    key = bucket_key(user, "vote")
    await other.eval("return 1", 1, key)  # connected (on a cluster: to its node)
    busy = asyncio.ensure_future(other.eval(_BUSY, 1, key, str(ms)))
    await asyncio.sleep(0.002)  # Redis is now running the busy script
    return busy


async def _late_loop_check(redis: Redis, other: Redis) -> tuple[Any, float]:
    """One check that Redis answers after 20 ms while the loop is blocked for 150 ms."""
    limiter = await _warm_limiter(redis)
    busy = await _keep_busy(other, "alice", 20)
    check = asyncio.ensure_future(limiter.check("alice", "vote"))
    await asyncio.sleep(0.005)  # the check is sent, and waits behind the script
    time.sleep(0.15)  # noqa: ASYNC251 (the point: the loop is late, answer and timeout both due)
    errors = _errors()
    quota = await check
    await busy
    return quota, _errors() - errors


async def test_an_answer_that_came_in_time_is_used_when_the_loop_is_late(
    redis: Redis, settings: Settings
) -> None:
    other = redis_client(settings)
    try:
        quota, failed_open = await _late_loop_check(redis, other)
    finally:
        await other.aclose()
    assert failed_open == 0
    assert quota is not None and quota.remaining == 4


async def test_a_silent_redis_is_counted_in_memory_within_the_timeout(
    redis: Redis, settings: Settings
) -> None:
    other = redis_client(settings)
    limiter = await _warm_limiter(redis)
    try:
        busy = await _keep_busy(other, "bob", 400)
        errors = _errors()
        started = time.monotonic()
        quota = await limiter.check("bob", "vote")
        waited = time.monotonic() - started
        await busy
    finally:
        await other.aclose()
    # Counted in this process instead of let through: the limit stays on.
    assert quota is not None and quota.limit == 5 and quota.remaining == 4
    assert _errors() - errors == 1
    assert waited < 0.3  # bounded by the timeout, not by Redis's 400 ms
