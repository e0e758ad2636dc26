"""Each projection's low-water mark, and the log's answered head, published in Redis for
readers (read-your-writes).

Every event at or below a projection's low-water mark is applied, across all its partitions and
processes (the mark is the least saved position over the partitions of its epoch). A reader
given ``min_position=P`` waits until the mark reaches P, whichever comment or list it reads.
The value only ever rises.

The head is the highest position the command API has answered with: it records it before it
answers, so no client can hold a position above it, and a ``min_position`` beyond it is refused
at once instead of waited for (it could only be made up).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, cast

from kernel.redis_client import AnyRedis
from projectors.redis_keys import head_key, low_water_key, progress_channel

# Raise the mark in KEYS[1]; when it rose, announce "<ARGV[2]> <mark>" on KEYS[2] (the query API
# wakes its waits on it instead of polling).
_RAISE = (
    "if tonumber(ARGV[1]) > tonumber(redis.call('GET', KEYS[1]) or '0') then"
    " redis.call('SET', KEYS[1], ARGV[1])"
    " redis.call('PUBLISH', KEYS[2], ARGV[2] .. ' ' .. ARGV[1]) end"
)


class ProgressBoard:
    """The low-water marks of one deployment's projections."""

    def __init__(self, redis: AnyRedis, deployment: str) -> None:
        self.redis = redis
        self.deployment = deployment

    async def publish(self, projection: str, low_water: int) -> None:
        """Raise ``projection``'s published mark to ``low_water``."""
        await self._raise(low_water_key(self.deployment, projection), projection, low_water)

    async def publish_head(self, position: int) -> None:
        """Raise the answered head to ``position``."""
        await self._raise(head_key(self.deployment), "head", position)

    async def _raise(self, key: str, name: str, mark: int) -> None:
        channel = progress_channel(self.deployment)
        await cast(Awaitable[Any], self.redis.eval(_RAISE, 2, key, channel, str(mark), name))

    async def head(self, projection: str) -> int:
        """The highest position known to exist: answered by the command API, or reached by
        ``projection`` (events written another way, a seed say, count once projected)."""
        keys = [head_key(self.deployment), low_water_key(self.deployment, projection)]
        values = await cast(Awaitable[list[Any]], self.redis.mget(keys))
        return max(int(v or 0) for v in values)

    async def low_water(self, projection: str) -> int:
        """``projection``'s published mark (0 when none)."""
        key = low_water_key(self.deployment, projection)
        return int(await cast(Awaitable[Any], self.redis.get(key)) or 0)
