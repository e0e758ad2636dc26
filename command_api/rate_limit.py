"""Per-user vote rate limit in Redis: a fixed window counted by one Lua call.

If Redis is unreachable the limiter lets votes through (and counts that): losing votes is worse
than briefly not limiting them.
"""

from __future__ import annotations

import math

import structlog
from prometheus_client import Counter
from redis.asyncio import Redis
from redis.exceptions import RedisError

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
    """At most ``limit`` votes per user per ``window_seconds``."""

    def __init__(self, redis: Redis, limit: int, window_seconds: int) -> None:
        self._script = redis.register_script(_SCRIPT)
        self._limit = limit
        self._window_ms = window_seconds * 1000

    async def check(self, user_id: str) -> None:
        """Count one vote for ``user_id``; raise ``RateLimited`` over the limit."""
        if self._limit <= 0:
            return
        try:
            wait_ms = int(
                await self._script(
                    keys=[f"tally:ratelimit:votes:{{{user_id}}}"],
                    args=[self._window_ms, self._limit],
                )
            )
        except (RedisError, OSError) as exc:
            LIMITER_ERRORS.inc()
            log.warning("rate_limiter_unavailable", error=str(exc))
            return
        if wait_ms > 0:
            RATE_LIMITED.inc()
            raise RateLimited(max(1, math.ceil(wait_ms / 1000)))
