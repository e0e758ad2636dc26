"""The relay and projector processes: failover, crashes and a broker that loses its data."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from typing import Any

import httpx
from elasticsearch import AsyncElasticsearch
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from kernel.auth import mint_token
from kernel.settings import Settings
from projectors.es_indices import COMMENTS_ALIAS, VOTES_ALIAS
from projectors.redis_keys import prefix
from tally import stack
from tests.e2e.conftest import start_process, start_service, stop_service
from tests.pipeline import (
    env_of,
    eventually,
    isolated,
    publish,
    record_history,
    redis_matches_store,
)

RELAY_PORTS = (29111, 29112)
PROJECTOR_PORT = 29113


def metric(port: int, name: str) -> float | None:
    """The value of an unlabelled (or first) sample of ``name`` on a /metrics port."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.TransportError:
        return None
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            return float(line.rsplit(" ", 1)[1])
    return None


async def wait_for(check: Any, seconds: float) -> float:
    """Poll a sync check; return how long it took."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if check():
            return time.monotonic() - started
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {seconds} s")


async def test_a_standby_relay_takes_over_within_5_seconds_of_the_leaders_death(
    settings: Settings, apool: AsyncConnectionPool[Any]
) -> None:
    config = isolated(settings)
    leader = start_process(
        ["relay"], env_of(config) | {"TALLY_RELAY_METRICS_PORT": str(RELAY_PORTS[0])}
    )
    standby = None
    try:
        await wait_for(lambda: metric(RELAY_PORTS[0], "tally_relay_leader") == 1, 30)
        standby = start_process(
            ["relay"], env_of(config) | {"TALLY_RELAY_METRICS_PORT": str(RELAY_PORTS[1])}
        )
        await wait_for(lambda: metric(RELAY_PORTS[1], "tally_relay_leader") == 0, 30)
        await asyncio.sleep(1.5)
        assert metric(RELAY_PORTS[1], "tally_relay_leader") == 0  # one leader at a time
        leader.send_signal(signal.SIGKILL)
        took = await wait_for(lambda: metric(RELAY_PORTS[1], "tally_relay_leader") == 1, 10)
        assert took < 5
        await record_history(apool, 30, seed=7)  # and the new leader publishes

        async def drained() -> bool:
            async with apool.connection() as conn:
                row = await (await conn.execute("SELECT count(*) FROM outbox")).fetchone()
            return row == (0,)

        await eventually(drained, 30)
    finally:
        leader.kill()
        if standby is not None:
            stop_service(standby)


async def test_a_projector_killed_mid_batch_counts_no_vote_twice_and_loses_none(
    settings: Settings, apool: AsyncConnectionPool[Any], redis: Redis
) -> None:
    # Small batches, so that the run lasts long enough to be killed part-way.
    config = isolated(settings, projector_batch_size=5)
    history = await record_history(apool, 5000, seed=8)
    await publish(config, apool)
    env = env_of(config) | {"TALLY_PROJECTOR_METRICS_PORT": str(PROJECTOR_PORT)}
    projector = start_process(["project", "redis"], env)
    try:
        applied = lambda: metric(PROJECTOR_PORT, "tally_projection_applied_total") or 0  # noqa: E731
        await wait_for(lambda: 0 < applied() < len(history) * 0.8, 60)
        projector.send_signal(signal.SIGKILL)  # no clean shutdown, no offset commit
        projector.wait(10)
        assert not await redis_matches_store(redis, config.redis_generation, apool)
        projector = start_process(["project", "redis"], env)
        await eventually(lambda: redis_matches_store(redis, config.redis_generation, apool), 90)
    finally:
        stop_service(projector)


async def test_projections_heal_after_the_broker_restarts_and_loses_its_data(
    settings: Settings, apool: AsyncConnectionPool[Any], redis: Redis
) -> None:
    config = isolated(settings)
    env = env_of(config)
    relay = start_process(["relay"], env)
    projector = start_process(["project", "redis"], env)
    broker = stack.kafka_server(settings)
    try:
        for seed in range(10, 14):
            await record_history(apool, 100, seed=seed)  # votes keep coming
            await asyncio.sleep(1)
        await asyncio.to_thread(broker.lose_disks)  # every topic and offset is gone
        await asyncio.to_thread(broker.up)
        for seed in range(14, 18):
            await record_history(apool, 100, seed=seed)
            await asyncio.sleep(1)
        await eventually(lambda: redis_matches_store(redis, config.redis_generation, apool), 120)
    finally:
        stop_service(relay)
        stop_service(projector)
        await asyncio.to_thread(broker.up)


async def test_a_vote_over_http_shows_in_redis_and_both_indices(
    settings: Settings, clean_store: Any, redis: Redis
) -> None:
    config = isolated(settings)
    env = env_of(config)
    api = start_service(settings, "command-api", settings.command_api_port, env)
    workers = [start_process(["relay"], env), start_process(["project", "all"], env)]
    es = AsyncElasticsearch(settings.es_url)
    try:
        alice = {"Authorization": f"Bearer {mint_token('alice', settings.jwt_secret, 60)}"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.command_api_port}") as c:
            tag = f"e2e-{uuid.uuid4().hex[:6]}"
            posted = (
                await c.post(
                    "/api/comments",
                    json={"commentable_id": tag, "content": "hi there"},
                    headers=alice,
                )
            ).json()
            key = f"{prefix(config.redis_generation, tag)}c:{posted['id']}"
            # Once the post shows, every projector has joined its group and is reading.
            await eventually(lambda: _visible(redis, es, key, posted["id"], posted["position"]), 60)
            voted = (
                await c.put(f"/api/comments/{posted['id']}/vote", json={"value": 1}, headers=alice)
            ).json()
        started = time.monotonic()
        key = f"{prefix(config.redis_generation, tag)}c:{posted['id']}"

        async def everywhere() -> bool:
            if int(await redis.hget(key, "pos") or 0) < voted["position"]:
                return False
            doc = await es.mget(index=COMMENTS_ALIAS, ids=[posted["id"]])
            if not doc["docs"][0].get("found") or doc["docs"][0]["_source"]["up"] != 1:
                return False
            vote_docs = await es.search(
                index=f"{VOTES_ALIAS}-v1", query={"term": {"comment_id": posted["id"]}}
            )
            found.extend(hit["_source"] for hit in vote_docs["hits"]["hits"])
            return bool(found)

        found: list[dict[str, Any]] = []
        await eventually(everywhere, 30)
        print(f"vote visible in Redis and both indices after {time.monotonic() - started:.2f} s")
        # The analyst's document says whose comment got the vote, and where it sits.
        assert {(d["user_id"], d["comment_author_id"], d["commentable_id"]) for d in found} == {
            ("alice", "alice", tag)
        }
        assert found[0]["parent_id"] is None
    finally:
        await es.close()
        for proc in workers:
            stop_service(proc)
        stop_service(api)


async def _visible(
    redis: Redis, es: AsyncElasticsearch, key: str, comment_id: str, position: int
) -> bool:
    """Has the event at ``position`` reached Redis, the comment index and (if a vote) the votes?"""
    if int(await redis.hget(key, "pos") or 0) < position:
        return False
    doc = (await es.mget(index=COMMENTS_ALIAS, ids=[comment_id]))["docs"][0]
    if not doc.get("found") or doc["_source"]["position"] < position:
        return False
    if doc["_source"]["up"] == 0:
        return True
    votes = await es.search(index=f"{VOTES_ALIAS}-v1", query={"term": {"comment_id": comment_id}})
    return bool(votes["hits"]["hits"])
