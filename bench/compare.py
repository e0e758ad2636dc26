"""Tally next to its anchors, in one run on the same servers, with the ratios and a chart.

    python -m bench.compare [--seconds 10] [--rates 500,1000,...,6000]

1. The ``eventsourcing`` library (``pip install -e .[bench]``) appending vote aggregates to the
   same PostgreSQL, 1 and 16 threads, no HTTP.
2. Tally's durable votes through HTTP (``bench.write``: 2 workers, group commit, 64 clients).
3. A litestar hello world, Tally's single-score reads and ranked pages of 50 (``bench.read``),
   each on one worker.
4. Open loop: votes offered at fixed rates (a request is due at its time whether or not the
   last one answered, so a slow server is charged for the queue it causes): the rate achieved
   and the latency percentiles from the time each request was due. Each vote carries a fresh
   ``Idempotency-Key``, as in 2. The highest rate served in full with p99 within 50 ms is the
   "sustained" figure, also set beside the library.

Writes ``bench/results/compare.json`` and ``docs/images/compare.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import uvloop

from bench import read as read_bench
from bench import write as write_bench
from bench.anchor import eventsourcing_appends
from bench.common import (
    Connection,
    at_fixed_rate,
    bench_settings,
    checkpoint,
    drop_keyspace,
    fresh_command_api,
    no_collector_pauses,
    percentile,
    post_comments,
    prepare_stack,
    report,
)
from kernel.auth import mint_token
from kernel.settings import Settings, as_environment, get_settings
from tally.processes import stop as stop_service

CHART = Path("docs/images/compare.png")
WRITES = "votes/s over HTTP vs eventsourcing appends"
SUSTAINED = "votes/s sustained at p99 <= 50 ms (open loop) vs eventsourcing appends"
SCORES = "score reads vs hello world"
PAGES = "pages of 50 vs hello world"
GOALS = {WRITES: 4.5, SUSTAINED: 4.5, SCORES: 0.6, PAGES: 0.5}
P99_GOAL_MS = 50.0


def sustained(curve: list[dict[str, Any]]) -> float:
    """The highest open-loop rate served in full (98 % of the offered votes answered 200
    within the run) at p99 within the goal; 0 if none was."""
    kept = [
        p["achieved_per_second"]
        for p in curve
        if p["p99_ms"] <= P99_GOAL_MS and p["achieved_per_second"] >= 0.98 * p["offered_per_second"]
    ]
    return max(kept, default=0.0)


def anchor(settings: Settings, seconds: float) -> list[dict[str, Any]]:
    """The eventsourcing library's appends, in a database of its own on the same server."""
    dsn = psycopg.conninfo.make_conninfo(settings.pg_dsn, dbname="tally_anchor")
    admin = psycopg.conninfo.make_conninfo(settings.pg_dsn, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS tally_anchor")
        conn.execute("CREATE DATABASE tally_anchor")
    runs = []
    for threads in (1, 16):
        checkpoint(dsn)
        runs.append(eventsourcing_appends(dsn, threads, seconds))
    return runs


async def open_loop(
    port: int, comments: list[str], tokens: list[str], rate: float, seconds: float
) -> dict[str, Any]:
    """Offer ``rate`` votes/s for ``seconds``; latency counts from when each was due."""
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(256):
        idle.put_nowait(await Connection.open("127.0.0.1", port))
    rng = random.Random(7)
    latencies: list[float] = []
    statuses: dict[int, int] = {}

    async def vote(due: float) -> None:
        conn = await idle.get()
        try:
            body = b'{"value":%d}' % rng.choice((-1, 1))
            # As bench.write: every vote carries a fresh key, so each also stores its reply.
            headers = {
                "Authorization": f"Bearer {rng.choice(tokens)}",
                "Idempotency-Key": uuid.uuid4().hex,
            }
            status, _ = await conn.request(
                "PUT", f"/api/comments/{rng.choice(comments)}/vote", body, headers
            )
            latencies.append(time.perf_counter() - due)
            statuses[status] = statuses.get(status, 0) + 1
        finally:
            idle.put_nowait(conn)

    elapsed = await at_fixed_rate(rate, seconds, vote)
    while not idle.empty():
        await idle.get_nowait().close()
    latencies.sort()
    return {
        "offered_per_second": rate,
        "achieved_per_second": round(statuses.get(200, 0) / elapsed, 1),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "p50_ms": round(percentile(latencies, 0.5) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
    }


def write_curve(rates: list[float], seconds: float) -> list[dict[str, Any]]:
    """The open-loop points, on one 2-worker command API."""
    settings = get_settings()
    tokens = [mint_token(f"user-{n}", settings.jwt_secret, 3600) for n in range(5000)]
    proc = fresh_command_api(write_bench.PORT, 2, {})
    points = []
    try:
        comments = uvloop.run(post_comments(write_bench.PORT, tokens, 500, "curve"))
        checkpoint(settings.pg_dsn)
        for rate in rates:
            with no_collector_pauses():
                point = uvloop.run(open_loop(write_bench.PORT, comments, tokens, rate, seconds))
            points.append(point)
            print(
                f"open loop {rate:>6.0f}/s offered: {point['achieved_per_second']:>7.1f}/s,"
                f" p50 {point['p50_ms']} ms, p99 {point['p99_ms']} ms",
                file=sys.stderr,
            )
            if len(points) >= 2 and not sustained(points[-2:]):
                break  # past the knee: two rates in a row missed the goal
    finally:
        stop_service(proc)
    return points


def reads(seconds: float) -> dict[str, Any]:
    """Hello world, single scores and ranked pages, each on one worker, as ``bench.read``."""
    settings = msgspec.structs.replace(
        bench_settings(get_settings()), es_comments_alias="bench-comments"
    )
    ids = uvloop.run(read_bench.build_thread(settings, 10_000))
    env = as_environment(settings) | {"TALLY_LOG_LEVEL": "warning", "TALLY_LOG_FORMAT": "json"}
    scores = [f"/api/comments/{i}/score" for i in ids]
    pages = [
        f"/api/commentables/bench-0/comments?sort={s}&limit=50"
        for s in ("top", "new", "best", "controversial", "hot")
    ]
    try:
        hello = read_bench.measure("bench.hello_app:create_app", env, ["/hello"], seconds)
        app = "tally.bootstrap:query_app"
        single = read_bench.measure(app, env, scores, seconds)
        page = read_bench.measure(app, env, pages, seconds)
        uncached = read_bench.measure(app, env | {"TALLY_PAGE_CACHE_MS": "0"}, pages, seconds)
    finally:
        uvloop.run(drop_keyspace(settings))
    return {"hello_world": hello, "single_score": single, "page_of_50": page} | {
        "page_of_50_uncached": uncached
    }


def chart(result: dict[str, Any]) -> None:
    """Ratios to the anchors, and the open-loop curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    ratios = result["ratios"]
    names = list(ratios)
    left.barh(names, [ratios[n] for n in names], color="#4c72b0")
    for n, name in enumerate(names):
        left.text(ratios[name], n, f" {ratios[name]:.2f}", va="center")
    goals = [GOALS.get(n) for n in names]
    left.scatter(
        [g for g in goals if g],
        [n for n, g in enumerate(goals) if g],
        marker="|",
        s=400,
        color="#c44e52",
        label="goal (issue 15)",
        zorder=3,
    )
    left.legend(loc="lower right")
    left.set_xlabel("ratio to the anchor (1.0 = the anchor)")
    left.set_title("Tally ÷ anchor, one run, same 2 cores")
    left.invert_yaxis()
    curve = result["open_loop_writes"]
    offered = [p["offered_per_second"] for p in curve]
    right.plot(offered, [p["achieved_per_second"] for p in curve], "o-", label="achieved votes/s")
    right.plot(offered, offered, ":", color="grey", label="offered")
    right.set_xlabel("offered votes/s (open loop)")
    right.set_ylabel("votes/s")
    p99 = right.twinx()
    p99.plot(offered, [p["p99_ms"] for p in curve], "s-", color="#c44e52", label="p99 ms")
    p99.set_yscale("log")
    p99.set_ylabel("p99 latency from due time (ms, log)")
    right.set_title("Durable votes over HTTP, open loop")
    right.legend(loc="upper left")
    p99.legend(loc="lower right")
    fig.tight_layout()
    CHART.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(CHART, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rates", default=",".join(str(r) for r in range(500, 6001, 500)))
    args = parser.parse_args()
    settings = get_settings()
    prepare_stack(settings)
    anchors = anchor(settings, args.seconds)
    print(f"eventsourcing library: {anchors}", file=sys.stderr)
    write_args = argparse.Namespace(
        seconds=args.seconds,
        warmup=3,
        concurrency=64,
        workers=2,
        users=5000,
        comments=500,
        idempotency=True,
    )
    writes = write_bench.run_mode(True, write_args)
    curve = write_curve([float(r) for r in args.rates.split(",")], args.seconds)
    read = reads(args.seconds)
    best_anchor = max(a["events_per_second"] for a in anchors)
    hello = read["hello_world"]["requests_per_second"]
    best_sustained = sustained(curve)
    ratios = {
        WRITES: writes["votes_per_second"] / best_anchor,
        SUSTAINED: best_sustained / best_anchor,
        SCORES: read["single_score"]["requests_per_second"] / hello,
        PAGES: read["page_of_50"]["requests_per_second"] / hello,
        "pages of 50, no shared copy, vs hello world": (
            read["page_of_50_uncached"]["requests_per_second"] / hello
        ),
    }
    result = {
        "eventsourcing": anchors,
        "write": writes,
        "open_loop_writes": curve,
        "sustained_votes_per_second": best_sustained,
        **read,
        "ratios": {k: round(v, 3) for k, v in ratios.items()},
    }
    with contextlib.suppress(ImportError):
        chart(result)
    for name, value in ratios.items():
        print(f"{name}: {value:.2f}", file=sys.stderr)
    report("compare", result)


if __name__ == "__main__":
    main()
