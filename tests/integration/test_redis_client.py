"""The Redis client every process uses packs its commands with hiredis, on one server and on a
Redis Cluster, and a script call over many keys comes back whole."""

from __future__ import annotations

import uuid

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from kernel.redis_client import queue_script
from kernel.settings import Settings
from tally.clients import redis_client

_ECHO = (
    "local out = {} for i, k in ipairs(KEYS) do out[i] = k end out[#out + 1] = ARGV[1] return out"
)


async def test_script_calls_over_many_keys_round_trip_through_hiredis_packing(
    settings: Settings, redis: Redis
) -> None:
    tag = uuid.uuid4().hex[:8]
    sha = await redis.script_load(_ECHO)
    calls = [[f"t:{{{tag}-{n}}}:k{i}:é" for i in range(81)] for n in range(50)]
    async with redis.pipeline(transaction=False) as pipe:
        for n, keys in enumerate(calls):
            queue_script(pipe, sha, keys, f"argument {n}")
        replies = await pipe.execute()
    assert replies == [
        [k.encode() for k in keys] + [f"argument {n}".encode()] for n, keys in enumerate(calls)
    ]
    if isinstance(redis, RedisCluster):
        classes = {node.connection_class for node in redis.get_nodes()}
    else:
        classes = {redis.connection_pool.connection_class}
    assert all(c.__name__.startswith("Hiredis") for c in classes), classes


async def test_a_blocking_pool_client_packs_with_hiredis_too(settings: Settings) -> None:
    client = redis_client(settings, pool_wait=1.0)
    try:
        assert await client.set(f"t:{uuid.uuid4().hex}", "é", ex=5)
        if not isinstance(client, RedisCluster):
            assert client.connection_pool.connection_class.__name__.startswith("Hiredis")
    finally:
        await client.aclose()
