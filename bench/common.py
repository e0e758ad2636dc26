"""Shared benchmark helpers: a lean keep-alive HTTP/1.1 client, percentiles, machine facts."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

from kernel.settings import Settings
from tally.clients import redis_client
from tally.processes import serve


class Connection:
    """One keep-alive HTTP/1.1 connection; cheaper per request than a general client."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def request(
        self, method: str, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        """Send one request, return (status, body)."""
        fields = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{fields}\r\n".encode()
            + body
        )
        head = (await self.reader.readuntil(b"\r\n\r\n")).lower()
        length = 0
        if (at := head.find(b"\r\ncontent-length:")) >= 0:
            length = int(head[at + 17 : head.index(b"\r\n", at + 2)])
        payload = await self.reader.readexactly(length) if length else b""
        return int(head.split(maxsplit=2)[1]), payload

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def at_fixed_rate(
    rate: float, seconds: float, send: Callable[[float], Coroutine[Any, Any, None]]
) -> float:
    """Open loop: start ``send(due)`` every ``1/rate`` s for ``seconds``, whether or not the
    earlier ones answered; wait for all, and return the seconds from start to the last answer."""
    started = time.perf_counter()
    tasks = []
    for n in range(int(rate * seconds)):
        due = started + n / rate
        if (wait := due - time.perf_counter()) > 0:
            await asyncio.sleep(wait)
        tasks.append(asyncio.create_task(send(due)))
    await asyncio.gather(*tasks)
    return time.perf_counter() - started


@contextlib.contextmanager
def no_collector_pauses() -> Iterator[None]:
    """The cycle collector off while a load runs in this process, as timing tools do.

    A load generator keeps every request's task and timings until the end, and the collector's
    passes over them stopped its event loop for 50 to 150 ms every few seconds: every request
    due in that time was charged the pause as server latency (per-second p99 of an open loop at
    3,500 votes/s: 80 to 170 ms in the seconds with a pass, 30 to 40 ms between; with the collector
    off, 35 to 55 ms throughout).
    """
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def zipf_weights(count: int) -> list[float]:
    """Cumulative Zipf-like weights for ``rng.choices(items, cum_weights=...)``: a few items
    get most of the picks (cumulative, so each pick is a bisection, not a sum of ``count``)."""
    return list(itertools.accumulate(1 / (rank + 1) for rank in range(count)))


def percentile(sorted_values: list[float], fraction: float) -> float:
    """The value below which ``fraction`` of the sorted values fall."""
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, round(fraction * (len(sorted_values) - 1)))
    return sorted_values[index]


def machine() -> dict[str, Any]:
    """What this benchmark ran on."""
    model = ""
    with contextlib.suppress(OSError):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next(
            (ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), ""
        )
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def start_service(
    service: str, port: int, env: dict[str, str], workers: int
) -> subprocess.Popen[bytes]:
    """Run ``tally serve`` and wait for /health."""
    return serve(service, port, env, workers)


async def post_comments(port: int, tokens: list[str], count: int, prefix: str) -> list[str]:
    """Post ``count`` comments over 20 commentables named ``<prefix>-<n>``; return their ids."""
    import json

    conn = await Connection.open("127.0.0.1", port)
    ids = []
    for n in range(count):
        body = json.dumps({"commentable_id": f"{prefix}-{n % 20}", "content": f"c{n}"}).encode()
        status, reply = await conn.request(
            "POST", "/api/comments", body, {"Authorization": f"Bearer {tokens[n % len(tokens)]}"}
        )
        assert status == 201, reply
        ids.append(json.loads(reply)["id"])
    await conn.close()
    return ids


def prepare_stack(settings: Settings) -> None:
    """Start the local stack and migrate, as `make run` would."""
    from kernel.logging import configure_logging
    from tally import stack
    from tally.cli import _migrate

    configure_logging("bench", "json", "warning")  # logs to stderr; stdout carries the JSON

    stack.stack_up(settings, lambda line: print(line, file=sys.stderr))
    _migrate(settings)


def bench_settings(settings: Settings) -> Settings:
    """The run stack's servers, but a database, topic, groups and keyspace of the bench's own."""
    import uuid

    import msgspec
    import psycopg

    tag = uuid.uuid4().hex[:8]
    dsn = psycopg.conninfo.make_conninfo(settings.pg_dsn, dbname="tally_bench")
    return msgspec.structs.replace(
        settings,
        pg_dsn=dsn,
        kafka_topic=f"bench.events.{tag}",
        kafka_dlq_topic=f"bench.dlq.{tag}",
        kafka_group_prefix=f"bench-{tag}",
        redis_generation=f"bench{tag}",
        relay_metrics_port=0,
        projector_metrics_port=0,
    )


async def fresh_bench_database(settings: Settings) -> None:
    """Create and migrate the bench database, then empty it."""
    import psycopg

    from event_store.migrate import EMPTY_EVERYTHING, ensure_database, migrate

    await ensure_database(settings.pg_dsn)
    await migrate(settings.pg_dsn)
    async with await psycopg.AsyncConnection.connect(settings.pg_dsn, autocommit=True) as conn:
        await conn.execute(EMPTY_EVERYTHING)


def checkpoint(dsn: str) -> None:
    """Flush PostgreSQL's dirty buffers now, so the write benchmark that follows (Tally's or the
    anchor's) does not pay for the WAL an earlier one left behind."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CHECKPOINT")


def fresh_command_api(port: int, workers: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A command API over the bench database, emptied first: every write run starts from the
    same empty log, as the anchor does (the run stack's database grows with every run, and its
    outbox is never drained while no relay runs)."""
    from kernel.settings import as_environment, get_settings

    settings = bench_settings(get_settings())
    asyncio.run(fresh_bench_database(settings))
    quiet = {"TALLY_LOG_FORMAT": "json", "TALLY_LOG_LEVEL": "warning"}
    return start_service("command-api", port, as_environment(settings) | quiet | env, workers)


def synthetic_history(
    events: int, commentables: int = 200, comments: int = 5000, seed: int = 1
) -> list[Any]:
    """A valid history (see ``event_store.seed``): posts, then Zipf-popular votes."""
    from event_store.seed import SeedPlan, history

    plan = SeedPlan(
        events=events, commentables=commentables, comments=comments, users=20_000, seed=seed
    )
    return list(history(plan))


async def record(settings: Settings, pending: list[Any], chunk: int = 5000) -> None:
    """Append pending events (with their outbox rows) in large transactions."""
    import psycopg

    from event_store.postgres import append_pending

    async with await psycopg.AsyncConnection.connect(settings.pg_dsn) as conn:
        for start in range(0, len(pending), chunk):
            async with conn.transaction(), conn.cursor() as cur:
                await append_pending(cur, pending[start : start + chunk])


def report(name: str, result: dict[str, Any]) -> None:
    """Print the JSON report and keep a copy under bench/results/."""
    import json

    document = {"benchmark": name, "machine": machine(), **result}
    out = Path("bench/results")
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(document, indent=2))
    print(json.dumps(document, indent=2))


async def with_history(events: int) -> Settings:
    """Bench settings over a fresh bench database holding ``events`` synthetic events."""
    from kernel.settings import get_settings

    settings = bench_settings(get_settings())
    await fresh_bench_database(settings)
    await record(settings, synthetic_history(events))
    return settings


async def drop_keyspace(settings: Settings, generation: str | None = None) -> None:
    """Remove the bench's Redis generation, so benchmarks leave the run stack as they found it."""

    from projectors.generations import delete_generation

    redis = redis_client(settings)
    try:
        await delete_generation(redis, generation or settings.redis_generation)
    finally:
        await redis.aclose()
