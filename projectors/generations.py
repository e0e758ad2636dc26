"""Which Redis generation is live, and how a rebuild switches to a new one.

The pointer is one hash, ``tally:generation:<base>`` (``base`` is ``TALLY_REDIS_GENERATION``):

- ``current``: the generation readers read and the live projector writes (``base`` when unset);
- ``retiring``: the generation a rebuild just replaced. The live projector keeps it up to date
  for a grace period, so a reader that still has it cached never sees a score go backwards.

Generations after the first are named ``<base>.<n>``; a key prefix ``tally:g<base>:`` does not
match ``tally:g<base>.<n>:``, so dropping one generation never touches another.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from typing import cast

from kernel.redis_client import AnyRedis
from projectors.redis_keys import generation_pattern, pointer_key

# Readers cache the pointer this long; a rebuild waits longer before it stops updating the
# retiring generation.
READER_CACHE_SECONDS = 0.5
GRACE_SECONDS = 2.0


def next_generation(base: str, current: str) -> str:
    """The name of the generation after ``current``."""
    number = int(current.rsplit(".", 1)[1]) if current.startswith(f"{base}.") else 1
    return f"{base}.{number + 1}"


class Generations:
    """Reads and moves the pointer of one family of generations."""

    def __init__(self, redis: AnyRedis, base: str) -> None:
        self.redis = redis
        self.base = base
        self._key = pointer_key(base)

    async def current(self) -> str:
        """The live generation, read from Redis."""
        value = await cast(Awaitable[bytes | None], self.redis.hget(self._key, "current"))
        return value.decode() if value else self.base

    async def written(self) -> list[str]:
        """The generations the live projector writes: the current one, then any retiring one."""
        current, retiring = await cast(
            Awaitable[list[bytes | None]], self.redis.hmget(self._key, ["current", "retiring"])
        )
        live = current.decode() if current else self.base
        return [live] + ([retiring.decode()] if retiring and retiring.decode() != live else [])

    async def switch(self, new: str) -> str:
        """Make ``new`` current in one command; the old one retires. Returns the old one."""
        old = await self.current()
        if old != new:
            await cast(
                Awaitable[int],
                self.redis.hset(self._key, mapping={"current": new, "retiring": old}),
            )
        return old

    async def retired(self) -> None:
        """The grace period is over: stop updating the retiring generation."""
        await cast(Awaitable[int], self.redis.hdel(self._key, "retiring"))

    async def drop(self, generation: str) -> int:
        """Delete every key of ``generation``; returns how many. Never the current one."""
        if generation == await self.current():
            raise ValueError(f"generation {generation} is live; refusing to drop it")
        return await delete_generation(self.redis, generation)


async def scan_batches(
    redis: AnyRedis, pattern: str, size: int = 5000
) -> AsyncIterator[list[bytes]]:
    """The keys matching ``pattern``, in lists of up to ``size`` (SCAN: never blocks Redis)."""
    batch: list[bytes] = []
    async for key in redis.scan_iter(pattern, count=size):
        batch.append(key)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


async def delete_generation(redis: AnyRedis, generation: str) -> int:
    """Delete every key of ``generation``, live or not; returns how many."""
    dropped = 0
    async for keys in scan_batches(redis, generation_pattern(generation)):
        dropped += await redis.unlink(*keys)
    return dropped
