"""Projector throughput: events per second applied to Redis, read from Kafka.

    python -m bench.projector [--events 400000]

Publishes a synthetic history (posts, then Zipf-popular votes over 200 commentables) to a
bench topic, then runs the Redis projection's runner until it has applied the last event.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import uvloop
from psycopg_pool import AsyncConnectionPool

from bench.common import (
    drop_keyspace,
    prepare_stack,
    report,
    with_history,
)
from event_store.relay import publish_all
from kernel.runtime import tune_gc
from kernel.settings import get_settings
from projectors.redis_scores import RedisScoresProjection
from projectors.runner import ProjectorRunner
from tally.bootstrap import projector_runner, relay_config
from tally.clients import redis_client


async def main(events: int) -> None:
    settings = await with_history(events)
    pool: AsyncConnectionPool = AsyncConnectionPool(
        settings.pg_dsn, min_size=1, max_size=4, open=False, kwargs={"autocommit": True}
    )
    await pool.open()
    await publish_all(relay_config(settings), pool)
    redis = redis_client(settings)
    runner = projector_runner(
        settings, RedisScoresProjection(redis, settings.redis_generation), pool
    )
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    await reached(runner, 1)  # the consumer joined and applied its first batch
    started, first = time.perf_counter(), runner.applied_low_water
    await reached(runner, events)
    seconds = time.perf_counter() - started
    stop.set()
    await task
    applied = events - first
    rate = applied / seconds
    print(
        f"projector (redis): {applied:.0f} events in {seconds:.2f} s = {rate:,.0f} events/s",
        file=sys.stderr,
    )
    await redis.aclose()
    await pool.close()
    await drop_keyspace(settings)
    report(
        "projector",
        {
            "projection": "redis",
            "events": int(applied),
            "seconds": round(seconds, 3),
            "events_per_second": round(rate),
            "batch_size": settings.projector_batch_size,
        },
    )


async def reached(runner: ProjectorRunner, position: int) -> None:
    """Poll the runner's low-water mark, saved after every batch (the gauge of the same name
    is only updated every ``CHECK_SECONDS``, which made the timing coarse)."""
    while runner.applied_low_water < position:  # noqa: ASYNC110
        await asyncio.sleep(0.005)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=400_000)
    args = parser.parse_args()
    prepare_stack(get_settings())
    tune_gc()  # as `tally project` and `tally replay` do
    uvloop.run(main(args.events))
