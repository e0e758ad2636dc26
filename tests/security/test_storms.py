"""Hostile volumes: hundreds of live streams, and a storm of anonymous first pages.

Resource figures (Redis clients, file descriptors, Redis memory) are printed (``-s``) and
asserted against bounds that do not grow with the number of clients or requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
import uuid
from typing import Any

import httpx
import msgspec
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from event_store.seed import SeedPlan, seed
from kernel.settings import Settings, as_environment
from projectors.redis_keys import intact_key, live_channel, ranking_key
from query_api.redis_reads import RedisReads
from tally.processes import serve
from tally.processes import stop as stop_process
from tests.security.conftest import Factory, project_all

QUERY_PORT = 28500
METRICS_PORT = 28501


def open_files(pid: int) -> int:
    """File descriptors a process (and its uvicorn workers) holds."""
    children = subprocess.run(
        ["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False
    ).stdout.split()
    return sum(len(os.listdir(f"/proc/{p}/fd")) for p in [str(pid), *children])


async def redis_clients(redis: Redis) -> int:
    return int((await redis.info("clients"))["connected_clients"])


async def test_hundreds_of_live_streams_share_one_subscription_and_reads_go_on(
    config: Settings, clean_store: AsyncConnectionPool[Any], redis: Redis
) -> None:
    config = msgspec.structs.replace(
        config, live_max_streams=250, live_max_streams_per_client=20, query_api_workers=1
    )
    env = as_environment(config) | {"TALLY_QUERY_API_METRICS_PORT": str(METRICS_PORT)}
    proc = serve("query-api", QUERY_PORT, env)
    base = f"http://127.0.0.1:{QUERY_PORT}"
    clients_before, files_before = await redis_clients(redis), open_files(proc.pid)
    streams: list[asyncio.Task[Any]] = []
    received: list[int] = []
    opened = asyncio.Semaphore(0)

    async def listen(address: str) -> None:
        transport = httpx.AsyncHTTPTransport(local_address=address)
        async with (
            httpx.AsyncClient(transport=transport, timeout=60) as client,
            client.stream("GET", f"{base}/api/commentables/storm/live") as stream,
        ):
            assert stream.status_code == 200
            async for line in stream.aiter_lines():
                if line.startswith(": subscribed"):
                    opened.release()
                if line.startswith("data:"):
                    received.append(1)
                    return

    try:
        # 12 client addresses, 20 streams each: 240 streams.
        for n in range(240):
            streams.append(asyncio.create_task(listen(f"127.0.0.{2 + n // 20}")))
        for _ in range(240):
            await asyncio.wait_for(opened.acquire(), 60)
        clients_during, files_during = await redis_clients(redis), open_files(proc.pid)
        async with httpx.AsyncClient(
            base_url=base, transport=httpx.AsyncHTTPTransport(local_address="127.0.0.2")
        ) as one:
            per_client = await one.get("/api/commentables/storm/live")  # its 21st
        async with httpx.AsyncClient(base_url=base, timeout=10) as reader:
            latencies = []
            for _ in range(50):  # reads go on meanwhile
                started = time.monotonic()
                reply = await reader.get("/api/scores?ids=00000000-0000-0000-0000-000000000001")
                latencies.append(time.monotonic() - started)
                assert reply.status_code == 200
            # Past the process's cap (250): new clients' streams, held open, until one is refused.
            extra: list[int] = []
            async with contextlib.AsyncExitStack() as held:
                for n in range(12):
                    transport = httpx.AsyncHTTPTransport(local_address=f"127.0.0.{20 + n}")
                    other = await held.enter_async_context(
                        httpx.AsyncClient(transport=transport, timeout=10)
                    )
                    stream = await held.enter_async_context(
                        other.stream("GET", f"{base}/api/commentables/storm/live")
                    )
                    extra.append(stream.status_code)
                    if stream.status_code == 503:
                        break
        # One score change reaches every stream through the one subscription.
        await redis.publish(
            live_channel("storm"),
            b'{"comment_id":"c","up":1,"down":0,"score":1,"position":1}',
        )
        await asyncio.wait_for(asyncio.gather(*streams), 30)
        stopped_at = time.monotonic()
    finally:
        for task in streams:
            task.cancel()
        await asyncio.gather(*streams, return_exceptions=True)
        stop_process(proc)
    print(
        f"streams: 240; redis clients {clients_before} -> {clients_during};"
        f" query API file descriptors {files_before} -> {files_during};"
        f" read p99 {sorted(latencies)[-1] * 1000:.0f} ms"
    )
    assert clients_during - clients_before <= 3  # one subscription, not one per stream
    assert per_client.status_code == 429
    assert extra == [200] * 10 + [503]
    assert len(received) == 240
    assert time.monotonic() - stopped_at < 30


async def test_a_query_api_stops_within_seconds_with_streams_open(config: Settings) -> None:
    env = as_environment(config) | {"TALLY_QUERY_API_METRICS_PORT": str(METRICS_PORT)}
    proc = serve("query-api", QUERY_PORT, env, workers=1)
    base = f"http://127.0.0.1:{QUERY_PORT}"
    opened = asyncio.Semaphore(0)

    async def listen() -> None:
        async with (
            httpx.AsyncClient(timeout=60) as client,
            client.stream("GET", f"{base}/api/commentables/quiet/live") as stream,
        ):
            async for line in stream.aiter_lines():
                if line.startswith(": subscribed"):
                    opened.release()

    streams = [asyncio.create_task(listen()) for _ in range(10)]
    try:
        for _ in streams:
            await asyncio.wait_for(opened.acquire(), 30)
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        await asyncio.to_thread(proc.wait, 15)
        took = time.monotonic() - started
    finally:
        for task in streams:
            task.cancel()
        await asyncio.gather(*streams, return_exceptions=True)
        stop_process(proc)
    print(f"query API stopped {took:.1f} s after SIGTERM with 10 streams open")
    assert took < 10


async def test_a_storm_of_first_pages_keeps_redis_memory_flat(
    config: Settings, clean_store: AsyncConnectionPool[Any], queries: Factory, redis: Redis
) -> None:
    await seed(config.pg_dsn, SeedPlan(events=20_000, commentables=1, comments=3_000, users=2_000))
    await project_all(config, clean_store)
    thread = "topic-0"  # the seed's only commentable
    sorts = ("top", "new", "best", "controversial", "hot")

    async def memory() -> int:
        return int((await redis.info("memory"))["used_memory"])

    async def snapshot_entries() -> tuple[int, int]:
        pattern = f"tally:g{config.redis_generation}:*snap:*"
        keys = [k async for k in redis.scan_iter(pattern) if not k.endswith(b":at")]
        sizes = [await redis.zcard(k) for k in keys]
        return len(keys), sum(sizes)

    snapshot_max = 200
    async with queries(ranking_snapshot_max=snapshot_max, ranking_snapshot_seconds=5) as client:
        first = await client.get(f"/api/commentables/{thread}/comments?limit=50")
        assert first.status_code == 200 and len(first.json()["comments"]) == 50, first.text
        before = await memory()
        requests, started = 0, time.monotonic()
        while time.monotonic() - started < 12:  # across three snapshot buckets
            replies = await asyncio.gather(
                *(client.get(f"/api/commentables/{thread}/comments?sort={s}") for s in sorts)
            )
            assert all(r.status_code == 200 for r in replies)
            requests += len(replies)
        after = await memory()
        keys, entries = await snapshot_entries()
    print(
        f"{requests} anonymous first pages in 12 s: redis used_memory {before:,} -> {after:,}"
        f" bytes; {keys} snapshots holding {entries} entries (ranking: 3,000 comments)"
    )
    # Bounded by the snapshot cap and the buckets, not by the ranking or the requests.
    assert entries <= snapshot_max * len(sorts) * 4
    assert after - before < 2_000_000


async def test_readers_with_fresh_positions_cannot_pile_up_snapshots(
    settings: Settings, redis: Redis
) -> None:
    """Each first page read with a position newer than the shared snapshot gets the newest
    comment, yet such readers share one snapshot of their own per half second, however many."""
    generation = f"t{uuid.uuid4().hex[:8]}"
    reads = RedisReads(redis, generation, snapshot_s=5, cursor_ttl_s=600)
    await redis.set(intact_key(generation), "1")
    ranking = ranking_key(generation, "storm", "new")
    started = time.monotonic()
    for n in range(1, 13):  # a write, then a read that must show it, twelve times over
        await redis.zadd(ranking, {f"c{n}": n})
        page = await reads.page("storm", "new", 5, None, mark=n, wanted=n)
        assert page.ids[0] == f"c{n}"
    elapsed = time.monotonic() - started
    snapshots = [
        k async for k in redis.scan_iter(f"tally:g{generation}:*snap:*") if b":at" not in k
    ]
    # Own ones: one per half-second slot at most; shared ones: one per 5 s bucket.
    assert len(snapshots) <= 2 * elapsed + 1 + elapsed / 5 + 1, (len(snapshots), elapsed)
    print(f"12 fresh reads in {elapsed:.1f} s made {len(snapshots)} snapshots")


async def test_a_live_client_that_stops_reading_is_closed_and_its_slot_comes_back(
    config: Settings, clean_store: AsyncConnectionPool[Any], redis: Redis
) -> None:
    config = msgspec.structs.replace(config, live_max_streams_per_client=1, live_write_seconds=1.0)
    env = as_environment(config)
    proc = serve("query-api", QUERY_PORT, env)
    try:
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # and it never reads
        stalled.connect(("127.0.0.1", QUERY_PORT))
        stalled.sendall(b"GET /api/commentables/slow/live HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.sleep(0.5)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{QUERY_PORT}") as client:
            second = await client.get("/api/commentables/slow/live", timeout=5)
            assert second.status_code == 429  # its one slot is taken
            payload = b"x" * 2000
            deadline = time.monotonic() + 30
            while True:  # fill its socket, then wait for the server to give up on it
                for _ in range(200):
                    await redis.publish(
                        live_channel("slow"), b'{"position": 1, "p": "%s"}' % payload
                    )
                async with client.stream("GET", "/api/commentables/slow/live", timeout=5) as again:
                    if again.status_code == 200:
                        break
                assert time.monotonic() < deadline, "the stalled stream kept its slot"
                await asyncio.sleep(0.5)
        stalled.close()
    finally:
        stop_process(proc)
