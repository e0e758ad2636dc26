"""A burst of votes through the running `make run` stack, and how long its backlog takes to drain.

    make run                                  # in another terminal
    python -m bench.burst [--votes 20000] [--concurrency 64]

Sends the votes to the command API as fast as it answers, while reading the relay's and the
projectors' metrics ports every half second (what Prometheus would scrape): the outbox depth and
each projection's lag in events and seconds. After the burst it waits until every lag is back to
zero. Prints a line per second on stderr and a JSON document at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from typing import Any

import uvloop

from bench.common import Connection, post_comments, report
from kernel.auth import mint_token
from kernel.settings import Settings, get_settings
from tally.status import scrape

PROJECTIONS = ("redis", "comments", "votes")


def sample_metrics(settings: Settings) -> dict[str, float]:
    """Outbox depth and per-projection lag, read from the relay's and projectors' /metrics."""
    wanted = {"tally_outbox_depth", "tally_projection_lag_events", "tally_projection_lag_seconds"}
    found: dict[str, float] = {}
    for port in (settings.relay_metrics_port, settings.projector_metrics_port):
        for (name, projection), value in scrape(f"http://127.0.0.1:{port}/metrics", 2).items():
            if name in wanted:
                found[f"{name}{{{projection}}}" if projection else name] = value
    return found


def backlog(sample: dict[str, float]) -> float:
    """Events not yet everywhere: the outbox plus the most lagging projection."""
    lags = [sample.get(f"tally_projection_lag_events{{{p}}}", 0.0) for p in PROJECTIONS]
    return sample.get("tally_outbox_depth", 0.0) + max(lags)


async def send_votes(
    port: int, comments: list[str], tokens: list[str], votes: int, concurrency: int
) -> dict[int, int]:
    """Send ``votes`` votes over ``concurrency`` connections; return the count per status."""
    statuses: dict[int, int] = {}
    left = votes

    async def client() -> None:
        nonlocal left
        conn = await Connection.open("127.0.0.1", port)
        rng = random.Random()
        try:
            while left > 0:
                left -= 1
                headers = {"Authorization": f"Bearer {rng.choice(tokens)}"}
                body = b'{"value":%d}' % rng.choice((-1, 1))
                status, _ = await conn.request(
                    "PUT", f"/api/comments/{rng.choice(comments)}/vote", body, headers
                )
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            await conn.close()

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return statuses


async def watch(settings: Settings, timeline: list[dict[str, Any]], started: float) -> None:
    """Scrape every half second into ``timeline``; print one line a second."""
    printed = 0.0
    while True:
        sample = await asyncio.to_thread(sample_metrics, settings)
        at = time.perf_counter() - started
        timeline.append({"t": round(at, 2), **sample})
        if at - printed >= 1:
            printed = at
            lags = "  ".join(
                f"{p} {sample.get(f'tally_projection_lag_events{{{p}}}', 0):,.0f} ev"
                f" / {sample.get(f'tally_projection_lag_seconds{{{p}}}', 0):.1f} s"
                for p in PROJECTIONS
            )
            print(
                f"{at:6.1f} s  outbox {sample.get('tally_outbox_depth', 0):,.0f}  {lags}",
                file=sys.stderr,
            )
        await asyncio.sleep(0.5)


async def burst(args: argparse.Namespace) -> dict[str, Any]:
    """Run the burst and measure the drain."""
    settings = get_settings()
    port = settings.command_api_port
    tokens = [mint_token(f"burst-{n}", settings.jwt_secret, 3600) for n in range(args.users)]
    comments = await post_comments(port, tokens, args.comments, "burst")
    timeline: list[dict[str, Any]] = []
    started = time.perf_counter()
    watcher = asyncio.create_task(watch(settings, timeline, started))
    try:
        statuses = await send_votes(port, comments, tokens, args.votes, args.concurrency)
        sent = time.perf_counter() - started
        deadline = time.perf_counter() + args.drain_timeout
        # Drained: two scrapes in a row with nothing in the outbox and no lag anywhere.
        while time.perf_counter() < deadline:
            await asyncio.sleep(0.5)
            recent = [s for s in timeline if s["t"] > sent][-2:]
            if len(recent) == 2 and all(backlog(s) == 0 for s in recent):
                break
        drained = time.perf_counter() - started
    finally:
        watcher.cancel()
    peak = max(timeline, key=backlog) if timeline else {}
    ok = statuses.get(200, 0)
    result = {
        "votes": args.votes,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "burst_seconds": round(sent, 2),
        "votes_per_second": round(ok / sent, 1),
        "peak_backlog_events": backlog(peak) if peak else 0,
        "peak_at_seconds": peak.get("t"),
        "peak_lag_seconds": max(
            (
                s.get(f"tally_projection_lag_seconds{{{p}}}", 0)
                for s in timeline
                for p in PROJECTIONS
            ),
            default=0,
        ),
        "drained": bool(timeline) and backlog(timeline[-1]) == 0,
        "drained_after_burst_seconds": round(drained - sent, 2),
        "concurrency": args.concurrency,
    }
    print(
        f"{ok:,} votes in {sent:.1f} s ({result['votes_per_second']:,}/s); peak backlog"
        f" {result['peak_backlog_events']:,.0f} events; drained {drained - sent:.1f} s after the"
        f" burst" + ("" if result["drained"] else " (NOT drained: timed out)"),
        file=sys.stderr,
    )
    return result


def main() -> None:
    """Parse arguments, run, report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--votes", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--comments", type=int, default=200)
    parser.add_argument("--drain-timeout", type=float, default=120)
    args = parser.parse_args()
    try:
        result = uvloop.run(burst(args))
    except OSError as exc:
        sys.exit(f"is `make run` running? ({exc})")
    report("burst", result)
    if not result["drained"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
