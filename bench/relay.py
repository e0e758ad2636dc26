"""Relay throughput: events per second from a filled outbox to Kafka-acknowledged and deleted.

    python -m bench.relay [--events 200000]

Fills the outbox of a bench database on the `make run` stack, then runs the relay's own
publishing loop until the outbox is empty. Prints a human line and JSON.
"""

from __future__ import annotations

import argparse
import sys
import time

import uvloop
from psycopg_pool import AsyncConnectionPool

from bench.common import (
    prepare_stack,
    report,
    with_history,
)
from event_store.messaging import ensure_topic
from event_store.relay import publish_all
from kernel.settings import get_settings
from tally.bootstrap import relay_config
from tally.clients import kafka_access


async def main(events: int) -> None:
    settings = await with_history(events)
    await ensure_topic(kafka_access(settings), settings.kafka_topic, settings.kafka_partitions)
    pool: AsyncConnectionPool = AsyncConnectionPool(
        settings.pg_dsn, min_size=1, max_size=2, open=False
    )
    await pool.open()
    started = time.perf_counter()
    try:
        published = await publish_all(relay_config(settings), pool)
    finally:
        await pool.close()
    seconds = time.perf_counter() - started
    rate = published / seconds
    print(f"relay: {published} events in {seconds:.2f} s = {rate:,.0f} events/s", file=sys.stderr)
    report(
        "relay",
        {
            "events": published,
            "seconds": round(seconds, 3),
            "events_per_second": round(rate),
            "batch_size": settings.relay_batch_size,
        },
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    prepare_stack(get_settings())
    uvloop.run(main(args.events))
