"""The single-writer ceiling of the event store: votes/s through ``run_batch``, no HTTP.

    python -m bench.ceiling [--seconds 8] [--batches 1,8,32,128,256] [--writers 4]

``--writers`` connections each run batches of N vote commands (the group commit's unit of
work: lock and load, decide, then take the log head lock, append and commit) back to back.
Every append serializes on the one ``event_head`` row from its UPDATE to its COMMIT. Each batch
size runs twice: with one writer, the append-and-commit round trip
(``tally_event_head_lock_seconds``) is the time the lock is held, nothing else waits for it, and
``batch / hold`` is the most the head lock lets through; with ``--writers`` writers, the
votes/s the store actually sustains, and the append time including the wait for the lock.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
import uuid
from typing import Any

import psycopg
import uvloop
from prometheus_client import REGISTRY

from bench.common import (
    bench_settings,
    fresh_bench_database,
    percentile,
    prepare_stack,
    report,
    zipf_weights,
)
from command_api.deciders.comment import PostComment
from command_api.deciders.vote import CastVote
from command_api.unit_of_work import run_batch
from command_api.work import Accepted, WorkItem
from kernel.settings import get_settings

IDEMPOTENCY_TTL = 86_400


async def _post(dsn: str, count: int) -> list[uuid.UUID]:
    ids = [uuid.uuid4() for _ in range(count)]
    items = [
        WorkItem(
            command=PostComment(
                comment_id=c, commentable_id=f"c-{n % 20}", author_id="author", content="x"
            ),
            user_id="author",
        )
        for n, c in enumerate(ids)
    ]
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        for start in range(0, count, 200):
            await run_batch(conn, items[start : start + 200], IDEMPOTENCY_TTL)
    return ids


async def measure(
    dsn: str, comments: list[uuid.UUID], batch: int, writers: int, seconds: float
) -> dict[str, Any]:
    """Votes/s, batch latency and the head lock's busy share at one batch size."""
    in_append, appends = -_held(), -_appends()
    batch_seconds: list[float] = []
    accepted = 0
    weights = zipf_weights(len(comments))
    stop_at = time.perf_counter() + seconds

    async def writer(n: int) -> None:
        nonlocal accepted
        rng = random.Random(n)
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            while time.perf_counter() < stop_at:
                votes = [
                    CastVote(
                        comment_id=rng.choices(comments, cum_weights=weights)[0],
                        user_id=f"user-{rng.randrange(200_000)}",
                        value=rng.choice((-1, 1)),
                    )
                    for _ in range(batch)
                ]
                items = [
                    WorkItem(command=v, user_id=v.user_id, idempotency_key=uuid.uuid4().hex)
                    for v in votes
                ]
                started = time.perf_counter()
                outcomes = await run_batch(conn, items, IDEMPOTENCY_TTL)
                batch_seconds.append(time.perf_counter() - started)
                accepted += sum(isinstance(o, Accepted) for o in outcomes)

    began = time.perf_counter()
    await asyncio.gather(*(writer(n) for n in range(writers)))
    wall = time.perf_counter() - began
    in_append += _held()
    appends += _appends()
    batch_seconds.sort()
    return {
        "batch": batch,
        "writers": writers,
        "votes_per_second": round(accepted / wall),
        "batch_p50_ms": round(percentile(batch_seconds, 0.5) * 1000, 2),
        "batch_p99_ms": round(percentile(batch_seconds, 0.99) * 1000, 2),
        "append_mean_ms": round(1000 * in_append / max(1, appends), 2),
    }


def _held() -> float:
    """Seconds spent in append-and-commit so far, in this process."""
    return float(REGISTRY.get_sample_value("tally_event_head_lock_seconds_sum") or 0.0)


def _appends() -> float:
    return float(REGISTRY.get_sample_value("tally_event_head_lock_seconds_count") or 0.0)


async def main(args: argparse.Namespace) -> None:
    settings = bench_settings(get_settings())
    await fresh_bench_database(settings)
    comments = await _post(settings.pg_dsn, 2000)
    points = []
    for batch in (int(b) for b in args.batches.split(",")):
        alone = await measure(settings.pg_dsn, comments, batch, 1, args.seconds)
        shared = await measure(settings.pg_dsn, comments, batch, args.writers, args.seconds)
        ceiling = round(batch * 1000 / alone["append_mean_ms"])
        points.append(
            {"batch": batch, "one_writer": alone, "writers": shared}
            | {"head_lock_ceiling_votes_per_second": ceiling}
        )
        print(
            f"batch {batch:>4}: lock held {alone['append_mean_ms']} ms (ceiling {ceiling:,}"
            f" votes/s); 1 writer {alone['votes_per_second']:,} votes/s;"
            f" {args.writers} writers {shared['votes_per_second']:,} votes/s, batch p99"
            f" {shared['batch_p99_ms']} ms",
            file=sys.stderr,
        )
    report("ceiling", {"writers": args.writers, "seconds": args.seconds, "points": points})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--batches", default="1,8,32,128,256")
    parser.add_argument("--writers", type=int, default=4)
    prepare_stack(get_settings())
    uvloop.run(main(parser.parse_args()))
