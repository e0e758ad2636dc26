"""The search engine under Tally: bulk projection rates, search latency, the comments lag.

    python -m bench.search [--comments 1000000] [--votes 200000] [--seconds 15]
                           [--lag-rate 1000 --lag-seconds 30]

On the `make run` stack (its own database, indices and keyspace):

1. seeds ``--comments`` comments (words drawn Zipf-like from English and Russian words and a
   long tail, as ``tally seed`` writes them) and ``--votes`` votes, then rebuilds the comment
   index and the vote index from the log through the projections' own bulk writes
   (``tally replay``'s path): events/s into each;
2. runs the query API and 8 clients searching one or two words (picked with the same Zipf
   weights) for ``--seconds``, without and with ``min_position`` (which waits for a refresh):
   p50/p99 of each, and how many refreshes the readers shared;
3. runs the command API, the relay and the comments projector and votes at ``--lag-rate`` for
   ``--lag-seconds``: from each vote's reply until the comments projection's low-water mark
   (published after each applied batch) covers it, p50/p99.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
from typing import Any
from urllib.parse import quote

import msgspec
import psycopg
import uvloop

from bench.common import (
    Connection,
    at_fixed_rate,
    bench_settings,
    drop_keyspace,
    fresh_bench_database,
    percentile,
    prepare_stack,
    report,
    start_service,
    zipf_weights,
)
from event_store.seed import SeedPlan, seed, vocabulary
from kernel.auth import mint_token
from kernel.runtime import tune_gc
from kernel.settings import Settings, as_environment, get_settings
from projectors.progress import ProgressBoard
from projectors.replay import replay
from tally.bootstrap import rebuild_of
from tally.clients import elasticsearch, redis_client
from tally.processes import stop as stop_service

QUERY_PORT = 18600
COMMAND_PORT = 18601
CLIENTS = 8


async def build_indices(settings: Settings, comments: int, votes: int) -> dict[str, Any]:
    """Seed the log, rebuild both indices from it; events/s of each rebuild."""
    await fresh_bench_database(settings)
    plan = SeedPlan(
        events=comments + votes, commentables=2_000, comments=comments, users=200_000, seed=3
    )
    started = time.perf_counter()
    await seed(settings.pg_dsn, plan, outbox=False)
    print(
        f"seeded {plan.events:,} events in {time.perf_counter() - started:.1f} s", file=sys.stderr
    )
    es = elasticsearch(settings, request_timeout=120)
    redis = redis_client(settings)
    rates: dict[str, Any] = {}
    try:
        for name in ("comments", "votes"):
            result = await replay(settings.pg_dsn, rebuild_of(settings, name, redis, es))
            rate = result.events / result.seconds
            print(f"{name}: {result.events:,} events at {rate:,.0f} events/s", file=sys.stderr)
            rates[f"{name}_events_per_second"] = round(rate)
            rates[f"{name}_seconds"] = round(result.seconds, 1)
        rates["events"] = plan.events
        rates["comments"] = comments
    finally:
        await es.close()
        await redis.aclose()
    return rates


def _queries(count: int) -> list[str]:
    """Search texts: one or two words, picked with the seeded text's own Zipf weights."""
    words, weights = vocabulary()
    rng = random.Random(5)
    return [
        " ".join(rng.choices(words, cum_weights=weights, k=rng.choice((1, 1, 2))))
        for _ in range(count)
    ]


async def search_latency(settings: Settings, seconds: float, wait: bool) -> dict[str, Any]:
    """8 clients searching for ``seconds``; with ``wait``, each with ``min_position``."""
    redis = redis_client(settings)
    head = 0
    if wait:  # the projection's mark covers the whole log: the read waits for a refresh only
        async with await psycopg.AsyncConnection.connect(settings.pg_dsn) as conn:
            found = await conn.execute("SELECT coalesce(max(position), 0) FROM events")
            row = await found.fetchone()
            head = int(row[0]) if row else 0
        await ProgressBoard(redis, settings.kafka_group_prefix).publish("comments", head)
    await redis.aclose()
    queries = _queries(10_000)
    latencies: list[float] = []
    hits = 0
    errors = 0
    deadline = time.perf_counter() + seconds

    async def client(n: int) -> None:
        nonlocal hits, errors
        conn = await Connection.open("127.0.0.1", QUERY_PORT)
        rng = random.Random(n)
        try:
            while time.perf_counter() < deadline:
                text = quote(rng.choice(queries))
                path = f"/api/comments/search?q={text}&limit=20"
                if wait:
                    path += f"&min_position={head}"
                started = time.perf_counter()
                status, body = await conn.request("GET", path, b"", {})
                latencies.append(time.perf_counter() - started)
                if status != 200:
                    errors += 1
                else:
                    hits += len(msgspec.json.decode(body)["comments"])
        finally:
            await conn.close()

    await asyncio.gather(*(client(n) for n in range(CLIENTS)))
    latencies.sort()
    return {
        "searches": len(latencies),
        "per_second": round(len(latencies) / seconds),
        "errors": errors,
        "hits_per_search": round(hits / max(1, len(latencies)), 1),
        "p50_ms": round(percentile(latencies, 0.5) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
    }


async def comments_lag(settings: Settings, rate: int, seconds: float) -> dict[str, Any]:
    """Votes at ``rate``; from each reply until the comments projection's mark covers it."""
    tokens = [mint_token(f"lag-{n}", settings.jwt_secret, 3600) for n in range(5000)]
    conn = await Connection.open("127.0.0.1", COMMAND_PORT)
    comments = []
    for n in range(200):
        body = json.dumps({"commentable_id": f"lag-{n % 20}", "content": f"lag {n}"}).encode()
        status, reply = await conn.request(
            "POST", "/api/comments", body, {"Authorization": f"Bearer {tokens[n]}"}
        )
        assert status == 201, reply
        comments.append(json.loads(reply)["id"])
    await conn.close()
    weights = zipf_weights(len(comments))
    board = ProgressBoard(redis_client(settings), settings.kafka_group_prefix)
    replies: list[tuple[int, float]] = []
    covered: list[tuple[int, float]] = []
    done = asyncio.Event()

    async def watch() -> None:
        while not done.is_set():
            covered.append((await board.low_water("comments"), time.perf_counter()))
            await asyncio.sleep(0.002)

    watcher = asyncio.create_task(watch())
    free: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(64):
        free.put_nowait(await Connection.open("127.0.0.1", COMMAND_PORT))
    rng = random.Random(9)

    async def vote(_due: float) -> None:
        c = await free.get()
        try:
            comment = rng.choices(comments, cum_weights=weights)[0]
            status, body = await c.request(
                "PUT",
                f"/api/comments/{comment}/vote",
                b'{"value":%d}' % rng.choice((-1, 1)),
                {"Authorization": f"Bearer {rng.choice(tokens)}"},
            )
            if status == 200:
                replies.append((json.loads(body)["position"], time.perf_counter()))
        finally:
            free.put_nowait(c)

    await at_fixed_rate(rate, seconds, vote)
    await asyncio.sleep(3)
    done.set()
    await watcher
    lags = []
    for position, replied in replies:
        seen = next((t for mark, t in covered if mark >= position), None)
        if seen is not None:
            lags.append(max(0.0, seen - replied))
    lags.sort()
    while not free.empty():
        await free.get_nowait().close()
    await board.redis.aclose()
    return {
        "rate": rate,
        "votes": len(replies),
        "covered": len(lags),
        "lag_p50_ms": round(percentile(lags, 0.5) * 1000, 1),
        "lag_p99_ms": round(percentile(lags, 0.99) * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--comments", type=int, default=1_000_000)
    parser.add_argument("--votes", type=int, default=200_000)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--lag-rate", type=int, default=1000)
    parser.add_argument("--lag-seconds", type=float, default=30)
    args = parser.parse_args()
    prepare_stack(get_settings())
    tune_gc()
    settings = bench_settings(get_settings())
    tag = settings.redis_generation
    settings = msgspec.structs.replace(
        settings, es_comments_alias=f"{tag}-comments", es_votes_alias=f"{tag}-votes"
    )
    env = as_environment(settings) | {"TALLY_LOG_FORMAT": "json", "TALLY_LOG_LEVEL": "warning"}
    result: dict[str, Any] = {"clients": CLIENTS}
    result["bulk"] = uvloop.run(build_indices(settings, args.comments, args.votes))
    query = start_service("query-api", QUERY_PORT, env, workers=1)
    try:
        result["search"] = uvloop.run(search_latency(settings, args.seconds, wait=False))
        result["search_min_position"] = uvloop.run(search_latency(settings, args.seconds, True))
    finally:
        stop_service(query)
    lag_env = env | {"TALLY_VOTE_RATE_LIMIT": "0", "TALLY_PROJECTOR_METRICS_PORT": "0"}
    api = start_service("command-api", COMMAND_PORT, lag_env, workers=2)
    workers = [
        subprocess.Popen([sys.executable, "-m", "tally.cli", *argv], env={**os.environ, **lag_env})
        for argv in (["relay"], ["project", "comments"])
    ]
    try:
        time.sleep(6)  # the projector joins its group
        result["comments_lag"] = uvloop.run(comments_lag(settings, args.lag_rate, args.lag_seconds))
    finally:
        for proc in [*workers, api]:
            stop_service(proc)
        uvloop.run(cleanup(settings))
    print(
        f"bulk: comments {result['bulk']['comments_events_per_second']:,}/s, votes"
        f" {result['bulk']['votes_events_per_second']:,}/s; search p99"
        f" {result['search']['p99_ms']} ms, with min_position"
        f" {result['search_min_position']['p99_ms']} ms; comments lag p99"
        f" {result['comments_lag']['lag_p99_ms']} ms",
        file=sys.stderr,
    )
    report("search", result)


async def cleanup(settings: Settings) -> None:
    """Drop the bench's indices and keyspace."""
    es = elasticsearch(settings, request_timeout=120)
    try:
        for alias in (settings.es_comments_alias, settings.es_votes_alias):
            await es.options(ignore_status=404).indices.delete(index=f"{alias}-v*")
    finally:
        await es.close()
    await drop_keyspace(settings)


if __name__ == "__main__":
    main()
