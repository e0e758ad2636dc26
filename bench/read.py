"""Read throughput and latency of the query API, next to a litestar hello world.

    python -m bench.read [--seconds 10] [--comments 10000]

Builds a commentable with ``--comments`` comments (and votes) in a bench keyspace and index,
then, each on ONE uvicorn worker and in the same run: a litestar hello world (the framework's
ceiling here), single-score reads, and ranked pages of 50. 64 keep-alive connections.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from typing import Any

import msgspec
import uvloop
from elasticsearch import AsyncElasticsearch

from bench.common import (
    Connection,
    bench_settings,
    drop_keyspace,
    no_collector_pauses,
    percentile,
    prepare_stack,
    report,
    synthetic_history,
)
from kernel.settings import Settings, as_environment, get_settings
from projectors.base import Projection
from projectors.es_comments import EsCommentsProjection
from projectors.redis_scores import RedisScoresProjection
from schemas.envelope import Envelope
from tally.clients import redis_client
from tally.processes import stop as stop_service

PORT = 18500


async def build_thread(settings: Settings, comments: int) -> list[str]:
    """Project a history straight into the bench keyspace and index; return the comment ids."""
    from datetime import UTC, datetime
    from uuid import uuid4

    pending = synthetic_history(comments * 5, commentables=1, comments=comments)
    now = datetime.now(UTC)
    envelopes = [
        Envelope(
            event_id=uuid4(),
            stream_id=p.stream_id,
            stream_version=p.stream_version,
            position=n,
            occurred_at=now,
            event=p.event,
        )
        for n, p in enumerate(pending, start=1)
    ]
    redis = redis_client(settings)
    es = AsyncElasticsearch(settings.es_url, request_timeout=60)
    projections: list[Projection] = [
        RedisScoresProjection(redis, settings.redis_generation),
        EsCommentsProjection(es, settings.es_comments_alias),
    ]
    for projection in projections:
        await projection.setup()
        # Filled from nothing, so whole: without the marker the query API takes the keyspace
        # for lost and serves every score from Elasticsearch (and no ranked page at all).
        await projection.mark_intact()
        for start in range(0, len(envelopes), 2000):
            await projection.apply(envelopes[start : start + 2000])
    await redis.aclose()
    await es.close()
    return [str(p.event.comment_id) for p in pending[:comments]]


async def load(paths: list[str], seconds: float, concurrency: int = 64) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    stop_at = time.perf_counter() + seconds

    async def client() -> None:
        conn = await Connection.open("127.0.0.1", PORT)
        rng = random.Random()
        try:
            while time.perf_counter() < stop_at:
                sent = time.perf_counter()
                status, _ = await conn.request("GET", rng.choice(paths), b"", {})
                latencies.append(time.perf_counter() - sent)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            await conn.close()

    await asyncio.gather(*(client() for _ in range(concurrency)))
    latencies.sort()
    return {
        "requests_per_second": round(statuses.get(200, 0) / seconds),
        "statuses": {str(k): v for k, v in statuses.items()},
        "p50_ms": round(percentile(latencies, 0.5) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
    }


def measure(
    app: str, env: dict[str, str], paths: list[str], seconds: float, hold: float = 0
) -> dict[str, Any]:
    import os
    import subprocess

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            app,
            "--factory",
            "--port",
            str(PORT),
            "--workers",
            "1",
            "--log-level",
            "warning",
            "--no-access-log",
            "--loop",
            "uvloop",
            "--http",
            "httptools",
        ],
        env={**os.environ, **env},
    )
    try:
        time.sleep(3)
        print(f"{app} serves on :{PORT} as pid {proc.pid}", file=sys.stderr)
        time.sleep(hold)
        uvloop.run(load(paths[:50], 1))  # warm up
        with no_collector_pauses():
            busy = uvloop.run(load(paths, seconds))  # throughput at 64 connections
            calm = uvloop.run(load(paths, seconds / 2, concurrency=8))  # latency at 8
        return busy | {"at_8_connections": calm}
    finally:
        stop_service(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--comments", type=int, default=10_000)
    parser.add_argument(
        "--hold",
        type=float,
        default=0,
        help="keep the query API up this many seconds before each load (to attach py-spy)",
    )
    args = parser.parse_args()
    prepare_stack(get_settings())
    settings = msgspec.structs.replace(
        bench_settings(get_settings()), es_comments_alias="bench-comments"
    )
    ids = uvloop.run(build_thread(settings, args.comments))
    env = as_environment(settings) | {"TALLY_LOG_LEVEL": "warning", "TALLY_LOG_FORMAT": "json"}
    hello = measure("bench.hello_app:create_app", env, ["/hello"], args.seconds)
    scores = measure(
        "tally.bootstrap:query_app",
        env,
        [f"/api/comments/{i}/score" for i in ids],
        args.seconds,
        args.hold,
    )
    pages = measure(
        "tally.bootstrap:query_app",
        env,
        [
            f"/api/commentables/bench-0/comments?sort={s}&limit=50"
            for s in ("top", "new", "best", "controversial", "hot")
        ],
        args.seconds,
        args.hold,
    )
    uvloop.run(drop_keyspace(settings))
    share = scores["requests_per_second"] / max(1, hello["requests_per_second"])
    print(
        f"hello world {hello['requests_per_second']}/s; score reads"
        f" {scores['requests_per_second']}/s ({share:.0%} of the ceiling), p99"
        f" {scores['at_8_connections']['p99_ms']} ms at 8 connections; pages of 50"
        f" {pages['requests_per_second']}/s, p99 {pages['at_8_connections']['p99_ms']} ms at 8",
        file=sys.stderr,
    )
    report(
        "read",
        {
            "workers": 1,
            "comments": args.comments,
            "hello_world": hello,
            "single_score": scores,
            "share_of_ceiling": round(share, 3),
            "ranked_page_of_50": pages,
        },
    )


if __name__ == "__main__":
    main()
