"""Each projection's low-water mark, published in Redis for readers (read-your-writes).

Every event at or below a projection's low-water mark is applied, across all its partitions and
processes (the mark is the least saved position over the partitions of its epoch). A reader
given ``min_position=P`` waits until the mark reaches P, whichever comment or list it reads.
The value only ever rises.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any, cast

from kernel.redis_client import AnyRedis
from projectors.redis_keys import low_water_key

_RAISE = (
    "if tonumber(ARGV[1]) > tonumber(redis.call('GET', KEYS[1]) or '0') then"
    " redis.call('SET', KEYS[1], ARGV[1]) end"
)


class ProgressBoard:
    """The low-water marks of one deployment's projections."""

    def __init__(self, redis: AnyRedis, deployment: str) -> None:
        self.redis = redis
        self.deployment = deployment

    async def publish(self, projection: str, low_water: int) -> None:
        """Raise ``projection``'s published mark to ``low_water``."""
        key = low_water_key(self.deployment, projection)
        await cast(Awaitable[Any], self.redis.eval(_RAISE, 1, key, str(low_water)))

    async def low_water(self, projection: str) -> int:
        """``projection``'s published mark (0 when none)."""
        key = low_water_key(self.deployment, projection)
        return int(await cast(Awaitable[Any], self.redis.get(key)) or 0)

    async def lowest(self, projections: Sequence[str]) -> int:
        """The least mark of ``projections`` (a read that needs all of them)."""
        keys = [low_water_key(self.deployment, p) for p in projections]
        values = await cast(Awaitable[list[Any]], self.redis.mget(keys))
        return min(int(v or 0) for v in values)
