"""Per-user rate limits in Redis: GCRA (a token bucket kept as one timestamp), per action.

Each action (``vote``, ``comment``: posting, editing and deleting) allows ``limit`` requests per
``window`` seconds, with bursts up to ``limit`` and no double burst at window boundaries: the
bucket refills smoothly. One key per user and action holds the "theoretical arrival time"; one
Lua call checks and updates it on Redis's clock. A request answered from its idempotency key is
refunded: replays are free.

If Redis is unreachable or slow the limiter counts in this process's memory instead
(``kernel.limits.LocalBuckets``, the same limits per worker), and counts that: the limits never
switch off, so a flood that slows Redis down does not lift them. A check waits at most
``timeout`` for Redis, and after a failure the limiter skips Redis for ``pause`` seconds, so a
stalled Redis costs requests microseconds, not a socket timeout each. Checks made in the same
event-loop tick share one script call (``TickBatcher``): one per tick on one server, one per
bucket in a pipeline on a cluster.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections.abc import Awaitable, Callable
from typing import cast

import structlog
from prometheus_client import Counter
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

from kernel.coalesce import TickBatcher
from kernel.limits import Limit, LocalBuckets, Quota
from kernel.redis_client import AnyRedis, queue_script, redis_away

log = structlog.get_logger(__name__)

RATE_LIMITED = Counter("tally_rate_limited_total", "Requests refused by the rate limit", ["action"])
LIMITER_ERRORS = Counter(
    "tally_rate_limiter_errors_total",
    "Rate-limit checks counted in memory because Redis did not answer in time",
)

# KEYS: the buckets. ARGV: for each bucket, emission interval (ms), window (ms), cost (1, or -1
# to refund). Returns for each bucket {allowed (1/0), remaining, ms until full, ms until the next
# request is allowed}. Many buckets per call: one command and one reply for a whole tick's
# checks (22 checks: 358 µs, against 580 µs for a pipeline of one call per bucket).
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local replies = {}
for i, key in ipairs(KEYS) do
  local interval, window, cost = tonumber(ARGV[3*i-2]), tonumber(ARGV[3*i-1]), tonumber(ARGV[3*i])
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  local new = tat + cost * interval
  if cost < 0 then
    if new > now then
      redis.call('SET', key, new, 'PX', math.ceil(new - now))
    else
      redis.call('DEL', key)
    end
    replies[i] = {1, 0, 0, 0}
  elseif new - window > now then
    replies[i] = {0, 0, math.ceil(tat - now), math.ceil(new - window - now)}
  else
    redis.call('SET', key, new, 'PX', math.ceil(new - now))
    replies[i] = {1, math.floor((window - (new - now)) / interval), math.ceil(new - now), 0}
  end
end
return replies
"""


# Passes of the event loop a reply already received may need to reach the check.
_LATE_LOOP_PASSES = 8


def bucket_key(user_id: str, action: str) -> str:
    """The Redis key of one user's bucket for one action (hash-tagged by user for a cluster)."""
    return f"tally:ratelimit:{{{user_id}}}:{action}"


class RateLimited(Exception):
    """Too many requests; try again after ``retry_after`` seconds."""

    def __init__(self, action: str, quota: Quota) -> None:
        super().__init__(f"too many {action} requests; retry after {quota.retry_after} s")
        self.retry_after = quota.retry_after
        self.quota = quota


class RateLimiter:
    """Per-user limits for each action in ``limits`` (an action missing there is not limited)."""

    def __init__(
        self,
        redis: AnyRedis,
        limits: dict[str, Limit],
        timeout: float = 0.05,
        pause: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self._sha = hashlib.sha1(_SCRIPT.encode()).hexdigest()
        self._limits = limits
        # Per action, the script's emission interval and window (ms), as the strings it is sent.
        self._script_args = {
            action: (
                str(limit.window_seconds * 1000 / limit.limit),
                str(limit.window_seconds * 1000),
            )
            for action, limit in limits.items()
            if limit.limit > 0
        }
        self._cluster = isinstance(redis, RedisCluster)  # a Protocol check: 0.5 µs, so once
        self._timeout = timeout
        self._pause = pause
        self._clock = clock
        self._local = LocalBuckets(clock)
        self._skip_until = 0.0
        self._batcher: TickBatcher[tuple[str, str, int], Quota | None] = TickBatcher(self._run)

    async def check(self, user_id: str, action: str) -> Quota | None:
        """Count one request; ``RateLimited`` over the limit. ``None`` when not limited."""
        limit = self._limits.get(action)
        if limit is None or limit.limit <= 0:
            return None
        quota = await self._batcher.get((user_id, action, 1))
        if quota is not None and quota.retry_after:
            RATE_LIMITED.labels(action).inc()
            raise RateLimited(action, quota)
        return quota

    async def refund(self, user_id: str, action: str) -> None:
        """Give back one request (it was a replay, answered without doing anything)."""
        limit = self._limits.get(action)
        if limit is not None and limit.limit > 0:
            await self._batcher.get((user_id, action, -1))

    async def _run(self, checks: list[tuple[str, str, int]]) -> list[Quota | None]:
        """The quotas after each check, in order; counted in memory while Redis is away."""
        if self._clock() < self._skip_until:
            return self._locally(checks)
        try:
            replies = await self._within_timeout(checks)
        except Exception as exc:
            if not redis_away(exc):
                raise
            self._skip_until = self._clock() + self._pause
            log.warning("rate_limiter_unavailable", error=repr(exc), paused_seconds=self._pause)
            return self._locally(checks)
        quotas: list[Quota | None] = []
        for (_, action, _), (_, remaining, full_ms, wait_ms) in zip(checks, replies, strict=True):
            quotas.append(
                Quota(
                    limit=self._limits[action].limit,
                    remaining=int(remaining),
                    reset_seconds=math.ceil(int(full_ms) / 1000),
                    retry_after=math.ceil(int(wait_ms) / 1000) if int(wait_ms) else 0,
                )
            )
        return quotas

    def _locally(self, checks: list[tuple[str, str, int]]) -> list[Quota | None]:
        LIMITER_ERRORS.inc(len(checks))
        return [
            self._local.take(bucket_key(user, action), self._limits[action], cost)
            for user, action, cost in checks
        ]

    async def _within_timeout(self, checks: list[tuple[str, str, int]]) -> list[list[int]]:
        """The replies, or ``TimeoutError`` if Redis has not answered within the timeout.

        Not ``asyncio.timeout``: when the loop runs late (a busy worker), the answer and the
        expired timer are handled in the same pass, and a cancelling timer would throw away an
        answer that came in time, then skip every check for the pause after it. Here an
        answer that is in is used: if the wait ended late, the reply gets a few more passes of
        the loop to be read (a cluster pipeline takes several), which costs nothing when Redis
        is really silent and the loop on time.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        work = asyncio.ensure_future(self._evaluate_loaded(checks))
        await asyncio.wait((work,), timeout=self._timeout)
        if not work.done() and loop.time() - started > 1.5 * self._timeout:
            for _ in range(_LATE_LOOP_PASSES):
                await asyncio.sleep(0)
                if work.done():
                    break
        if not work.done():
            work.cancel()
            raise TimeoutError(f"Redis did not answer within {self._timeout * 1000:g} ms")
        return work.result()

    async def _evaluate_loaded(self, checks: list[tuple[str, str, int]]) -> list[list[int]]:
        try:
            return await self._evaluate(checks)
        except NoScriptError:  # Redis restarted and lost its script cache
            await self._redis.script_load(_SCRIPT)
            return await self._evaluate(checks)

    async def _evaluate(self, checks: list[tuple[str, str, int]]) -> list[list[int]]:
        keys: list[str] = []
        args: list[str] = []
        for user_id, action, cost in checks:
            keys.append(bucket_key(user_id, action))
            args += (*self._script_args[action], str(cost))
        if not self._cluster:
            replies = self._redis.evalsha(self._sha, len(keys), *keys, *args)
            return list(await cast(Awaitable[list[list[int]]], replies))
        # A cluster takes one script call per bucket: the users' buckets lie in different slots.
        async with self._redis.pipeline(transaction=False) as pipe:
            for n, key in enumerate(keys):
                queue_script(pipe, self._sha, [key], *args[3 * n : 3 * n + 3])
            return [replies[0] for replies in await pipe.execute()]
