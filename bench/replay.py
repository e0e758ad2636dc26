"""Rebuild throughput: ``tally replay --projection redis`` over a large log.

    python -m bench.replay [--events 1000000] [--batch-size N]

Seeds a fresh bench database with ``tally seed`` (COPY, no outbox), then rebuilds the Redis
projection from position 0 into a new generation and switches to it, as an operator would.
Reports events/s up to the switch, and the wall time with the grace period and the drop.
"""

from __future__ import annotations

import argparse
import sys
import time

import psycopg
import uvloop

from bench.common import bench_settings, drop_keyspace, fresh_bench_database, prepare_stack, report
from event_store.seed import SeedPlan, seed
from kernel.runtime import tune_gc
from kernel.settings import get_settings
from projectors.generations import Generations
from projectors.rebuilds import RedisGenerationRebuild
from projectors.redis_keys import pointer_key
from projectors.replay import replay
from tally.clients import redis_client


async def main(events: int, batch_size: int) -> None:
    settings = bench_settings(get_settings())
    await fresh_bench_database(settings)
    started = time.perf_counter()
    plan = SeedPlan(events=events, commentables=200, comments=20_000, users=100_000, seed=1)
    await seed(settings.pg_dsn, plan, outbox=False)
    print(f"seeded {events:,} events in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    # A live log has long been vacuumed when it is replayed. Right after a bulk load, the first
    # read sets every row's hint bits and races autovacuum over the same pages: a few runs in
    # ten then took five times as long, which measured the disk, not the rebuild.
    started = time.perf_counter()
    async with await psycopg.AsyncConnection.connect(settings.pg_dsn, autocommit=True) as conn:
        await conn.execute("VACUUM (ANALYZE) events")
    print(f"vacuumed in {time.perf_counter() - started:.1f} s", file=sys.stderr)

    redis = redis_client(settings)
    try:
        result = await replay(
            settings.pg_dsn,
            RedisGenerationRebuild(redis, settings.redis_generation),
            batch_size=batch_size,
        )
        live = await Generations(redis, settings.redis_generation).current()
        assert live == result.target, (live, result.target)
        await drop_keyspace(settings, live)
        await redis.delete(pointer_key(settings.redis_generation))
    finally:
        await redis.aclose()
    rate = result.events / result.seconds
    print(
        f"replay (redis): {result.events:,} events in {result.seconds:.2f} s = {rate:,.0f}"
        f" events/s; {result.total_seconds:.2f} s with the grace period and the drop",
        file=sys.stderr,
    )
    report(
        "replay",
        {
            "projection": "redis",
            "events": result.events,
            "comments": plan.comments,
            "batch_size": batch_size,
            "seconds_to_switch": round(result.seconds, 3),
            "events_per_second": round(rate),
            "wall_seconds": round(result.total_seconds, 3),
        },
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=RedisGenerationRebuild.batch_size)
    args = parser.parse_args()
    prepare_stack(get_settings())
    tune_gc()  # as `tally project` and `tally replay` do
    uvloop.run(main(args.events, args.batch_size))
