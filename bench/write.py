"""Votes per second and latency through HTTP, against a 2-worker command API.

    python -m bench.write [--seconds 20] [--concurrency 64] [--mode both|on|off]

Uses the `make run` stack's servers (TALLY_* settings) with a database of its own, emptied
before each run, and durable commits (synchronous_commit on).
Prints one human line per mode and a JSON document at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import uvloop

from bench.common import (
    Connection,
    checkpoint,
    fresh_command_api,
    machine,
    no_collector_pauses,
    percentile,
    post_comments,
    prepare_stack,
    zipf_weights,
)
from kernel.auth import mint_token
from kernel.settings import get_settings
from tally.processes import stop as stop_service

PORT = 18100


async def _load(
    comments: list[str],
    tokens: list[str],
    seconds: float,
    warmup: float,
    concurrency: int,
    idempotency: bool,
) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    start = time.perf_counter()
    measure_from = start + warmup
    stop_at = measure_from + seconds
    weights = zipf_weights(len(comments))

    async def client() -> None:
        conn = await Connection.open("127.0.0.1", PORT)
        rng = random.Random()
        try:
            while (now := time.perf_counter()) < stop_at:
                comment = rng.choices(comments, cum_weights=weights)[0]
                headers = {"Authorization": f"Bearer {rng.choice(tokens)}"}
                if idempotency:
                    headers["Idempotency-Key"] = uuid.uuid4().hex
                body = b'{"value":%d}' % rng.choice((-1, 0, 1))
                sent = time.perf_counter()
                status, _ = await conn.request(
                    "PUT", f"/api/comments/{comment}/vote", body, headers
                )
                done = time.perf_counter()
                if now >= measure_from:
                    latencies.append(done - sent)
                    statuses[status] = statuses.get(status, 0) + 1
        finally:
            await conn.close()

    await asyncio.gather(*(client() for _ in range(concurrency)))
    latencies.sort()
    ok = statuses.get(200, 0)
    return {
        "votes_per_second": round(ok / seconds, 1),
        "requests": sum(statuses.values()),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "max_ms": round(latencies[-1] * 1000, 2) if latencies else None,
    }


def run_mode(group_commit: bool, args: argparse.Namespace) -> dict[str, Any]:
    settings = get_settings()
    tokens = [mint_token(f"user-{n}", settings.jwt_secret, 3600) for n in range(args.users)]
    proc = fresh_command_api(PORT, args.workers, {"TALLY_GROUP_COMMIT": str(group_commit).lower()})
    try:
        comments = asyncio.run(post_comments(PORT, tokens, args.comments, "bench"))
        checkpoint(settings.pg_dsn)
        with no_collector_pauses():
            result = asyncio.run(
                _load(
                    comments, tokens, args.seconds, args.warmup, args.concurrency, args.idempotency
                )
            )
    finally:
        stop_service(proc)
    result |= {
        "group_commit": group_commit,
        "workers": args.workers,
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "idempotency_keys": args.idempotency,
        "users": args.users,
        "comments": args.comments,
    }
    print(
        f"group_commit={'on ' if group_commit else 'off'} {result['votes_per_second']:>8} votes/s"
        f"  p50 {result['p50_ms']} ms  p99 {result['p99_ms']} ms  statuses {result['statuses']}",
        file=sys.stderr,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--comments", type=int, default=500)
    parser.add_argument("--mode", choices=["both", "on", "off"], default="both")
    parser.add_argument(
        "--no-idempotency",
        dest="idempotency",
        action="store_false",
        help="send no Idempotency-Key (by default every vote carries a fresh one)",
    )
    args = parser.parse_args()
    uvloop.install()
    prepare_stack(get_settings())
    modes = {"both": [True, False], "on": [True], "off": [False]}[args.mode]
    runs = [run_mode(mode, args) for mode in modes]
    report = {"benchmark": "write", "machine": machine(), "runs": runs}
    out = Path("bench/results")
    out.mkdir(parents=True, exist_ok=True)
    (out / "write.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
