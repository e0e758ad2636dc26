"""Helpers for tests that run the real relay and projectors against the test stack."""

from __future__ import annotations

import asyncio
import contextlib
import random
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from event_store.port import PendingEvent
from event_store.postgres import PostgresEventStore, append_pending
from event_store.relay import publish_all
from kernel.settings import Settings, as_environment
from projectors.base import Projection
from projectors.fold import fold
from projectors.progress import ProgressBoard
from projectors.redis_keys import prefix
from projectors.runner import ProjectorRunner
from schemas.envelope import Envelope
from tally.bootstrap import projector_runner, relay_config
from tests.histories import build_history


def isolated(settings: Settings, **overrides: Any) -> Settings:
    """Settings with a topic, consumer groups and Redis generation of this test's own."""
    tag = uuid.uuid4().hex[:8]
    own: dict[str, Any] = {
        "kafka_topic": f"test.events.{tag}",
        "kafka_dlq_topic": f"test.dlq.{tag}",
        "kafka_group_prefix": f"test-{tag}",
        "redis_generation": f"t{tag}",
        "relay_metrics_port": 0,
        "projector_metrics_port": 0,
    }
    return msgspec.structs.replace(settings, **(own | overrides))


async def record_history(pool: AsyncConnectionPool[Any], actions: int, seed: int) -> list[Envelope]:
    """Append a valid random history to the store (outbox rows included); return it as stored."""
    rng = random.Random(seed)
    # Mostly votes over many comments; deletes are rare so that most votes land.
    kinds = [0] * 2 + [1] * 30 + [2, 3]
    plan = [
        (
            rng.choice(kinds),
            rng.randrange(max(10, actions // 20)),
            rng.randrange(4),
            rng.choice([-1, 0, 1]),
        )
        for _ in range(actions)
    ]
    tag = uuid.uuid4().hex[:8]
    history = build_history(plan, [f"x-{tag}", f"y-{tag}"])
    pending = [
        PendingEvent(stream_id=e.stream_id, stream_version=e.stream_version, event=e.event)
        for e in history
    ]
    async with pool.connection() as conn:
        for start in range(0, len(pending), 1000):
            async with conn.transaction(), conn.cursor() as cur:
                await append_pending(cur, pending[start : start + 1000])
    store = PostgresEventStore(pool)
    return [e async for batch in store.read_all() for e in batch]


async def publish(settings: Settings, pool: AsyncConnectionPool[Any]) -> int:
    """Publish the whole outbox once, as the relay does; how many events."""
    return await publish_all(relay_config(settings), pool)


def runner_for(
    projection: Projection, settings: Settings, pool: AsyncConnectionPool[Any]
) -> ProjectorRunner:
    """A projector runner as ``tally project`` builds it."""
    return projector_runner(settings, projection, pool)


@contextlib.asynccontextmanager
async def running(runner: ProjectorRunner) -> AsyncIterator[None]:
    """Run a projector in this event loop for the duration of the block."""
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def consume(
    settings: Settings, count: int, seconds: float = 30
) -> list[ConsumerRecord[Any, Any]]:
    """The first ``count`` event messages of the events topic (watermarks left out), read by a
    consumer group of its own."""
    consumer = AIOKafkaConsumer(
        settings.kafka_topic,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        group_id=f"{settings.kafka_group_prefix}.check-{uuid.uuid4().hex[:6]}",
    )
    await consumer.start()
    got: list[ConsumerRecord[Any, Any]] = []
    deadline = time.monotonic() + seconds
    try:
        while len(got) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(got)} of {count} messages within {seconds} s")
            for messages in (await consumer.getmany(timeout_ms=500)).values():
                got += [m for m in messages if dict(m.headers).get("kind") != b"watermark"]
    finally:
        await consumer.stop()
    return got


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float = 30) -> None:
    """Wait until ``check`` passes (bounded); fail with a clear message otherwise."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"condition not met within {seconds} s")


async def redis_matches_store(
    redis: Redis, generation: str, pool: AsyncConnectionPool[Any]
) -> bool:
    """Do Redis counters equal the fold of the whole event store?"""
    store = PostgresEventStore(pool)
    views = fold([e async for batch in store.read_all() for e in batch])
    async with redis.pipeline(transaction=False) as pipe:
        for comment_id, view in views.items():
            pipe.hmget(
                f"{prefix(generation, view.commentable_id)}c:{comment_id}", "up", "down", "pos"
            )
        stored = await pipe.execute()
    return all(
        row == [str(v.up).encode(), str(v.down).encode(), str(v.position).encode()]
        for row, v in zip(stored, views.values(), strict=True)
    )


async def run_cli(
    settings: Settings,
    *argv: str,
    kill_after: float = 300,
    env: dict[str, str | None] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``tally ARGV...`` to completion with ``settings``, off the event loop.

    ``env`` sets more variables; a ``None`` value removes one.
    """
    environment: dict[str, str | None] = {
        **as_environment(settings),
        "PATH": "/usr/bin:/bin",
        **(env or {}),
    }
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tally.cli", *argv],
        env={name: value for name, value in environment.items() if value is not None},
        capture_output=True,
        text=True,
        timeout=kill_after,
    )


def redis_server_name(settings: Settings) -> str:
    """What the local stack calls its Redis in ``settings``' mode."""
    return "redis-cluster" if settings.redis_mode == "cluster" else "redis"


def env_of(settings: Settings) -> dict[str, str]:
    """The ``TALLY_*`` environment that reproduces ``settings`` in a child process."""
    return as_environment(settings)


async def answered(settings: Settings, redis: Any, position: int) -> None:
    """Record ``position`` as answered, as the command API does before it answers a command:
    a test that appends to the log itself holds a position no command answered."""
    await ProgressBoard(redis, settings.kafka_group_prefix).publish_head(position)
