"""Anonymous readers cannot make the query API keep, wait for or ask Redis what they like:
commentable ids are checked, positions beyond the head are refused at once, waits do not poll,
and each address has its share."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
import msgspec
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from kernel.settings import Settings, as_environment
from projectors.progress import ProgressBoard
from tally.processes import serve
from tally.processes import stop as stop_process
from tests.security.conftest import Factory, assert_problem, project_all

QUERY_PORT = 28540


async def _keys(redis: Redis) -> set[bytes]:
    return set(await redis.keys("*"))


async def test_a_commentable_id_the_write_side_refuses_is_refused_before_redis(
    queries: Factory, redis: Redis
) -> None:
    before = await _keys(redis)
    async with queries() as client:
        for bad in ("x" * 129, "spaces here", "ünïcode", "x" * 60_000):
            for path in (f"/api/commentables/{bad}/comments", f"/api/commentables/{bad}/live"):
                reply = await client.get(path)
                assert reply.status_code in (400, 404, 414), (path[:60], reply.status_code)
                if reply.status_code == 400:
                    assert_problem(reply, 400)
            searched = await client.get(
                "/api/comments/search", params={"q": "a", "commentable_id": bad}
            )
            assert_problem(searched, 400)
    assert await _keys(redis) - before == set()  # not one key named after them


async def test_a_position_no_command_answered_is_refused_at_once(
    queries: Factory, config: Settings, redis: Redis
) -> None:
    await ProgressBoard(redis, config.kafka_group_prefix).publish_head(100)
    async with queries(read_wait_ms=2000) as client:
        started = time.monotonic()
        beyond = await client.get(
            f"/api/comments/{uuid.uuid4()}/score", params={"min_position": 10**15}
        )
        took = time.monotonic() - started
        listed = await client.get("/api/commentables/c-1/comments", params={"min_position": 101})
    assert_problem(beyond, 400, "position-beyond-head")
    assert took < 0.5  # not held for the 2 s wait
    assert_problem(listed, 400, "position-beyond-head")


async def test_a_wait_for_a_position_is_woken_by_the_projectors_not_by_polling(
    config: Settings, clean_store: AsyncConnectionPool[Any], redis: Redis
) -> None:
    await project_all(config, clean_store)  # the Redis projection is whole (its marker is set)
    board = ProgressBoard(redis, config.kafka_group_prefix)
    await board.publish_head(500)
    await board.publish("redis", 10)

    async def gets() -> int:
        stats = await redis.info("commandstats")
        return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("get", "mget"))

    env = as_environment(msgspec.structs.replace(config, read_wait_ms=2000))
    proc = serve("query-api", QUERY_PORT, env)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{QUERY_PORT}") as client:
            await asyncio.sleep(0.5)  # its subscription is up
            before = await gets()
            started = time.monotonic()
            waiting = asyncio.create_task(
                client.get(f"/api/comments/{uuid.uuid4()}/score", params={"min_position": 400})
            )
            await asyncio.sleep(1.0)
            await board.publish("redis", 450)  # the projector moves on: the wait ends
            reply = await waiting
            took = time.monotonic() - started
            during = await gets() - before
    finally:
        stop_process(proc)
    assert reply.status_code == 404, reply.text  # reached, and the comment is not there
    assert 0.9 < took < 1.5  # woken by the announcement, well before the 2 s wait ends
    # Polling took about 30 reads in that second; now one at the start and one each 250 ms.
    assert during <= 12, during


async def test_each_address_has_its_share_of_reads_and_search_is_shared_less(
    queries: Factory, config: Settings, clean_store: AsyncConnectionPool[Any]
) -> None:
    await project_all(config, clean_store)
    async with queries(read_limit_per_address=20, search_limit_per_address=5) as client:
        statuses = [
            (await client.get("/api/commentables/c-1/comments")).status_code for _ in range(25)
        ]
        assert statuses.count(429) >= 4 and statuses[:15] == [200] * 15
        refused = await client.get("/api/commentables/c-1/comments")
        assert_problem(refused, 429, "rate-limited")
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.headers["ratelimit-remaining"] == "0"
    async with queries(read_limit_per_address=1000, search_limit_per_address=5) as client:
        found = [
            (await client.get("/api/comments/search", params={"q": "x"})).status_code
            for _ in range(8)
        ]
        assert found[:5] == [200] * 5 and found[5:] == [429] * 3
        page = await client.get("/api/commentables/c-1/comments")
        assert page.status_code == 200 and int(page.headers["ratelimit-limit"]) > 0


async def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_share(
    queries: Factory, config: Settings, clean_store: AsyncConnectionPool[Any]
) -> None:
    await project_all(config, clean_store)
    async with queries(read_limit_per_address=3, trusted_proxies="*") as client:
        for n in range(5):  # five clients behind the proxy, three reads each: none refused
            forwarded = {"X-Forwarded-For": f"198.51.100.{n + 1}"}
            statuses = [
                (await client.get("/api/commentables/c-1/comments", headers=forwarded)).status_code
                for _ in range(3)
            ]
            assert statuses == [200] * 3
    async with queries(read_limit_per_address=3, trusted_proxies="10.0.0.0/8") as client:
        forged = [
            (
                await client.get(
                    "/api/commentables/c-1/comments", headers={"X-Forwarded-For": f"203.0.113.{n}"}
                )
            ).status_code
            for n in range(5)
        ]
        assert forged.count(429) == 2  # the test client is no proxy: its forgeries count as it
