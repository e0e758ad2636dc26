"""The Redis client every adapter takes: one server, or a Redis Cluster (``TALLY_REDIS_MODE``).

The key schema (``projectors.redis_keys``) keeps every multi-key operation inside one hash slot,
so the same calls work on both; what differs (pub/sub) is handled where it is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias, TypeVar, cast

import hiredis
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ClusterDownError, RedisClusterException, RedisError

AnyRedis: TypeAlias = Redis | RedisCluster

# What a cluster client raises when no node answers (not a RedisError, unlike a single
# server's ConnectionError) or a slot has no master: Redis is down, not a bug.
CLUSTER_DOWN = (RedisClusterException, ClusterDownError)
# What a write on a connection closed under us raises (see ``closed_under_us``).
_RACE_ERRORS = (AttributeError, TypeError, RuntimeError)


class _HiredisPacking(AbstractConnection):
    """Packs commands with hiredis. redis-py's asyncio connection packs them in Python (its
    sync one uses hiredis), about 1.8 µs per argument: 150 µs for one of the projector's script
    calls over ten comments (81 keys), 12 µs with hiredis (same bytes). Anything hiredis does not
    take (``None``, a bool: redis-py refuses them with its own error; a command name of two
    words) goes to redis-py's packer."""

    def pack_command(self, *args: Any) -> list[bytes]:
        """The command in the Redis protocol, as one buffer."""
        name = args[0]
        if not (isinstance(name, str) and " " not in name):
            return super().pack_command(*args)
        try:
            return [hiredis.pack_command(args)]
        except TypeError:
            return super().pack_command(*args)


_PACKING: dict[type, type] = {}
_Connection = TypeVar("_Connection", bound=AbstractConnection)


def hiredis_packing(connection_class: type[_Connection]) -> type[_Connection]:
    """``connection_class`` (plain, TLS or Unix socket) packing commands with hiredis."""
    if issubclass(connection_class, _HiredisPacking):
        return connection_class
    packing = _PACKING.get(connection_class)
    if packing is None:
        name = f"Hiredis{connection_class.__name__}"
        packing = _PACKING[connection_class] = type(name, (_HiredisPacking, connection_class), {})
    return cast(type[_Connection], packing)


def pack_with_hiredis(client: AnyRedis) -> AnyRedis:
    """Have ``client`` pack with hiredis on every connection it opens from now on.

    A cluster client keeps its connection class in its nodes (the startup ones, and the
    arguments it makes discovered ones with): redis-py has no option for it.
    """
    if isinstance(client, RedisCluster):
        manager = client.nodes_manager
        kwargs = manager.connection_kwargs
        kwargs["connection_class"] = hiredis_packing(kwargs["connection_class"])
        for node in manager.startup_nodes.values():
            node.connection_class = hiredis_packing(node.connection_class)
    else:
        pool = client.connection_pool
        pool.connection_class = hiredis_packing(pool.connection_class)
    return client


async def get_many(redis: AnyRedis, keys: Sequence[str | bytes]) -> list[bytes | None]:
    """GET of keys that may lie in different hash slots, in one round trip (one per node in a
    cluster, where a plain MGET across slots is refused)."""
    if isinstance(redis, RedisCluster):
        return cast(list[bytes | None], await redis.mget_nonatomic(keys))
    return cast(list[bytes | None], await redis.mget(keys))


def queue_script(
    pipe: Pipeline | ClusterPipeline, sha: str, keys: Sequence[str], *args: Any
) -> None:
    """Queue EVALSHA on a pipeline of either kind. redis-py refuses ``evalsha`` on a cluster
    pipeline (it cannot know the script's keys are in one slot); ours are, by the key schema,
    and the command routes by its first key like any other."""
    pipe.execute_command("EVALSHA", sha, len(keys), *keys, *args)


def closed_under_us(exc: BaseException) -> bool:
    """Is ``exc`` a write on a connection redis-py closed concurrently? It surfaces as an
    AttributeError or TypeError from inside redis-py's asyncio connection instead of a
    ConnectionError (redis/redis-py#3546, #4287; unfixed in 6.x and 7.x), or under uvloop as a
    RuntimeError ("the handler is closed") from the transport it writes to. Seen when a Redis
    Cluster node restarts while several tasks share the client: Redis was away, not a bug."""
    if not isinstance(exc, _RACE_ERRORS):
        return False
    frame = exc.__traceback__
    while frame is not None:
        if frame.tb_frame.f_code.co_filename.endswith(_CONNECTION_MODULE):
            return True
        frame = frame.tb_next
    return False


def redis_away(exc: BaseException) -> bool:
    """Did ``exc`` come from Redis being away or going away (retry or fail open), not a bug?"""
    return isinstance(exc, (RedisError, OSError, TimeoutError, *CLUSTER_DOWN)) or closed_under_us(
        exc
    )


_CONNECTION_MODULE = "redis/asyncio/connection.py"
