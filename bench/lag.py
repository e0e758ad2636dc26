"""Projection lag: from a vote's 200 to its new score in Redis, at a steady vote rate.

    python -m bench.lag [--rate 1000] [--seconds 60]

Runs the command API (2 workers), the relay and the Redis projector as processes on the
`make run` stack (own database, topic and keyspace), sends votes open-loop at ``--rate`` and
times each one from its HTTP reply to the score change published by the projector.
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

import uvloop

from bench.common import (
    Connection,
    at_fixed_rate,
    bench_settings,
    drop_keyspace,
    fresh_bench_database,
    percentile,
    post_comments,
    prepare_stack,
    report,
    start_service,
    zipf_weights,
)
from kernel.auth import mint_token
from kernel.settings import Settings, as_environment, get_settings
from tally.clients import redis_subscriber
from tally.processes import stop as stop_service

PORT = 18400


async def measure(settings: Settings, rate: int, seconds: float) -> dict[str, Any]:
    users = 20_000
    tokens = [mint_token(f"user-{n}", settings.jwt_secret, 3600) for n in range(users)]
    comments = await post_comments(PORT, tokens, 200, "lag")
    weights = zipf_weights(len(comments))
    redis = redis_subscriber(settings)
    pubsub = redis.pubsub()
    await pubsub.psubscribe("tally:live:*")
    seen: dict[str, list[tuple[int, float]]] = {}

    async def listen() -> None:
        async for message in pubsub.listen():
            if message["type"] == "pmessage":
                change = json.loads(message["data"])
                seen.setdefault(change["comment_id"], []).append(
                    (change["position"], time.perf_counter())
                )

    listener = asyncio.create_task(listen())
    connections = [await Connection.open("127.0.0.1", PORT) for _ in range(64)]
    free: asyncio.Queue[Connection] = asyncio.Queue()
    for conn in connections:
        free.put_nowait(conn)
    replies: list[tuple[str, int, float]] = []
    errors = 0
    rng = random.Random(7)

    async def vote(_due: float) -> None:
        nonlocal errors
        conn = await free.get()
        try:
            comment = rng.choices(comments, cum_weights=weights)[0]
            headers = {"Authorization": f"Bearer {rng.choice(tokens)}"}
            status, body = await conn.request(
                "PUT",
                f"/api/comments/{comment}/vote",
                b'{"value":%d}' % rng.choice((-1, 1, 0)),
                headers,
            )
            done = time.perf_counter()
            reply = json.loads(body)
            if status != 200:
                errors += 1
            elif reply["value"] != reply["previous"]:  # an event was appended
                replies.append((comment, reply["position"], done))
        finally:
            free.put_nowait(conn)

    sent_for = await at_fixed_rate(rate, seconds, vote)
    await asyncio.sleep(3)  # let the last changes arrive
    listener.cancel()
    lags, missing = [], 0
    for comment, position, replied in replies:
        arrivals = [t for p, t in seen.get(comment, []) if p >= position]
        if arrivals:
            lags.append(max(0.0, min(arrivals) - replied))
        else:
            missing += 1
    lags.sort()
    for conn in connections:
        await conn.close()
    await pubsub.aclose()  # type: ignore[no-untyped-call]
    await redis.aclose()
    return {
        "rate_asked": rate,
        "rate_sent": round(int(rate * seconds) / sent_for, 1),
        "seconds": seconds,
        "votes_with_events": len(replies),
        "errors": errors,
        "missing": missing,
        "lag_p50_ms": round(percentile(lags, 0.50) * 1000, 1),
        "lag_p99_ms": round(percentile(lags, 0.99) * 1000, 1),
        "lag_max_ms": round(lags[-1] * 1000, 1) if lags else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    prepare_stack(get_settings())
    settings = bench_settings(get_settings())
    uvloop.run(fresh_bench_database(settings))
    env = as_environment(settings) | {
        "TALLY_LOG_FORMAT": "json",
        "TALLY_LOG_LEVEL": "warning",
        "TALLY_VOTE_RATE_LIMIT": "0",
    }
    api = start_service("command-api", PORT, env, workers=2)
    workers = [
        subprocess.Popen([sys.executable, "-m", "tally.cli", *argv], env={**os.environ, **env})
        for argv in (["relay"], ["project", "redis"])
    ]
    try:
        time.sleep(6)  # the projector joins its consumer group
        result = uvloop.run(measure(settings, args.rate, args.seconds))
    finally:
        for proc in [*workers, api]:
            stop_service(proc)
        uvloop.run(drop_keyspace(settings))
    print(
        f"lag at {result['rate_sent']} votes/s: p50 {result['lag_p50_ms']} ms,"
        f" p99 {result['lag_p99_ms']} ms ({result['missing']} missing)",
        file=sys.stderr,
    )
    report("lag", result)


if __name__ == "__main__":
    main()
