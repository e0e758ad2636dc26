"""Per-user vote rate limit in Redis: a fixed window counted by one Lua call.

If Redis is unreachable or slow the limiter lets votes through (and counts that): losing votes
is worse than briefly not limiting them. A check waits at most ``timeout`` for Redis, and after a
failure the limiter skips Redis for ``pause`` seconds, so a stalled Redis costs votes
milliseconds, not a socket timeout each.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections.abc import Callable

import structlog
from prometheus_client import Counter
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError

from kernel.coalesce import TickBatcher

log = structlog.get_logger(__name__)

RATE_LIMITED = Counter("tally_votes_rate_limited_total", "Votes refused by the rate limit")
LIMITER_ERRORS = Counter("tally_rate_limiter_errors_total", "Rate-limit checks that failed open")

# Returns 0 when allowed, else the milliseconds until the window resets.
_SCRIPT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
if n > tonumber(ARGV[2]) then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
  return ttl
end
return 0
"""


class RateLimited(Exception):
    """Too many votes; try again after ``retry_after`` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many votes; retry after {retry_after} s")
        self.retry_after = retry_after


class VoteRateLimiter:
    """At most ``limit`` votes per user per ``window_seconds``.

    Checks made in the same event-loop tick share one Redis pipeline (``TickBatcher``), so under
    load the limit costs a fraction of a round trip per vote.
    """

    def __init__(
        self,
        redis: Redis,
        limit: int,
        window_seconds: int,
        timeout: float = 0.05,
        pause: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self._sha = hashlib.sha1(_SCRIPT.encode()).hexdigest()
        self._limit = limit
        self._window_ms = window_seconds * 1000
        self._timeout = timeout
        self._pause = pause
        self._clock = clock
        self._skip_until = 0.0
        self._batcher: TickBatcher[str, int] = TickBatcher(self._count)

    async def check(self, user_id: str) -> None:
        """Count one vote for ``user_id``; raise ``RateLimited`` over the limit."""
        if self._limit <= 0:
            return
        wait_ms = await self._batcher.get(user_id)
        if wait_ms > 0:
            RATE_LIMITED.inc()
            raise RateLimited(max(1, math.ceil(wait_ms / 1000)))

    async def _count(self, user_ids: list[str]) -> list[int]:
        """Milliseconds to wait for each user (0: allowed); fails open when Redis is down."""
        if self._clock() < self._skip_until:
            LIMITER_ERRORS.inc(len(user_ids))
            return [0] * len(user_ids)
        try:
            async with asyncio.timeout(self._timeout):
                try:
                    return await self._evaluate(user_ids)
                except NoScriptError:  # Redis restarted and lost its script cache
                    await self._redis.script_load(_SCRIPT)
                    return await self._evaluate(user_ids)
        except (RedisError, OSError, TimeoutError) as exc:
            LIMITER_ERRORS.inc(len(user_ids))
            self._skip_until = self._clock() + self._pause
            log.warning("rate_limiter_unavailable", error=repr(exc), paused_seconds=self._pause)
            return [0] * len(user_ids)

    async def _evaluate(self, user_ids: list[str]) -> list[int]:
        # EVALSHA on a plain pipeline: no SCRIPT EXISTS round trip before each flush.
        async with self._redis.pipeline(transaction=False) as pipe:
            for user_id in user_ids:
                pipe.evalsha(
                    self._sha,
                    1,
                    f"tally:ratelimit:votes:{{{user_id}}}",
                    str(self._window_ms),
                    str(self._limit),
                )
            return [int(r) for r in await pipe.execute()]
