"""Rebuilding every projection while votes come in and a reader polls the query API."""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from typing import Any

import httpx
from elasticsearch import AsyncElasticsearch
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from event_store.postgres import PostgresEventStore
from event_store.seed import SeedPlan, seed
from kernel.auth import mint_token
from kernel.settings import Settings
from projectors.fold import fold
from projectors.generations import Generations
from tests.e2e.conftest import start_system, stop_service
from tests.pipeline import eventually, isolated, run_cli

COMMAND_PORT = 28200
QUERY_PORT = 28201


async def test_rebuilding_every_projection_under_traffic_keeps_reads_whole(
    settings: Settings, clean_store: AsyncConnectionPool[Any], redis: Redis
) -> None:
    tag = uuid.uuid4().hex[:8]
    config = isolated(settings, es_comments_alias=f"test-rc-{tag}", es_votes_alias=f"test-rv-{tag}")
    await seed(
        config.pg_dsn, SeedPlan(events=20_000, commentables=8, comments=400, users=2_000, seed=5)
    )
    history = [e async for batch in PostgresEventStore(clean_store).read_all() for e in batch]
    views = {str(c): v for c, v in fold(history).items() if not v.deleted}
    quiet = sorted(views)[:60]
    quiet_thread = views[quiet[0]].commentable_id
    # A first page lists 20; the ranking snapshot can be 5 s old, so wait until it is whole.
    quiet_listed = min(20, sum(1 for v in views.values() if v.commentable_id == quiet_thread))
    procs = start_system(config, COMMAND_PORT, QUERY_PORT)
    stop = asyncio.Event()
    problems: list[str] = []
    reads = 0
    try:
        async with (
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{COMMAND_PORT}", timeout=30) as write,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{QUERY_PORT}", timeout=30) as read,
        ):

            async def settled() -> bool:
                """Every quiet score, and the quiet ranking (a snapshot), show the whole seed."""
                scores = await read.get("/api/scores", params={"ids": ",".join(quiet)})
                page = await read.get(f"/api/commentables/{quiet_thread}/comments")
                if scores.status_code != 200 or page.status_code != 200:
                    return False
                if scores.json()["missing"]:
                    return False
                listed = page.json()["comments"]
                return (
                    len(listed) == quiet_listed
                    and all(
                        s["score"] == views[s["comment_id"]].score for s in scores.json()["scores"]
                    )
                    and all(c["score"] == views[c["id"]].score for c in listed)
                    and [c["score"] for c in listed]
                    == sorted((c["score"] for c in listed), reverse=True)
                )

            await eventually(settled, 120)
            alice = {"Authorization": f"Bearer {mint_token('alice', config.jwt_secret, 900)}"}
            hot = []
            for n in range(5):
                reply = await write.post(
                    "/api/comments",
                    json={"commentable_id": f"hot-{tag}", "content": f"hot {n}"},
                    headers=alice,
                )
                hot.append(reply.json()["id"])

            async def hot_known() -> bool:
                # Not min_position: it waits on the highest position applied, and the hot
                # comments' partition may still be behind it.
                known = await read.get("/api/scores", params={"ids": ",".join(hot)})
                return known.status_code == 200 and not known.json()["missing"]

            await eventually(hot_known, 60)
            # The first page's order comes from a snapshot up to ranking_snapshot_seconds old:
            # one taken before the last quiet vote landed can order two comments now tied the
            # other way round. Wait for a snapshot of the settled ranking.
            await asyncio.sleep(config.ranking_snapshot_seconds + config.page_cache_ms / 1000 + 0.5)
            top = await read.get(f"/api/commentables/{quiet_thread}/comments")
            assert top.status_code == 200
            quiet_top = [(c["id"], c["score"]) for c in top.json()["comments"]]

            async def traffic() -> None:
                rng = random.Random(3)
                while not stop.is_set():
                    user = f"voter-{rng.randrange(300)}"
                    token = mint_token(user, config.jwt_secret, 900)
                    reply = await write.put(
                        f"/api/comments/{rng.choice(hot)}/vote",
                        json={"value": rng.choice([-1, 0, 1])},
                        headers={"Authorization": f"Bearer {token}"},
                    )
                    if reply.status_code != 200:
                        problems.append(f"vote: {reply.status_code} {reply.text}")
                    await asyncio.sleep(0.005)

            async def reader() -> None:
                nonlocal reads
                seen: dict[str, int] = {}
                while not stop.is_set():
                    scores = await read.get("/api/scores", params={"ids": ",".join(quiet + hot)})
                    page = await read.get(f"/api/commentables/{quiet_thread}/comments")
                    one = await read.get(f"/api/comments/{quiet[1]}")
                    reads += 1
                    for reply in (scores, page, one):
                        if reply.status_code != 200 or "x-tally-stale" in reply.headers:
                            problems.append(f"{reply.url}: {reply.status_code} {reply.text}")
                    if problems:
                        return
                    for s in scores.json()["scores"]:
                        c = s["comment_id"]
                        if c in views and s["score"] != views[c].score:
                            problems.append(f"quiet {c}: score {s['score']}, not {views[c].score}")
                    if scores.json()["missing"]:
                        problems.append(f"missing: {scores.json()['missing']}")
                    now = [(c["id"], c["score"]) for c in page.json()["comments"]]
                    if now != quiet_top:
                        changed = [
                            (i, was, is_)
                            for i, (was, is_) in enumerate(zip(quiet_top, now, strict=False))
                            if was != is_
                        ]
                        problems.append(
                            f"the quiet ranking changed ({len(quiet_top)} -> {len(now)}"
                            f" comments), first differences {changed[:4]}"
                        )
                    if one.json()["score"] != views[quiet[1]].score:
                        problems.append(f"comment read: {one.json()}")
                    position = int(scores.headers["x-tally-position"])
                    if position < seen.get("low_water", 0):
                        problems.append(f"low-water mark went back to {position}")
                    seen["low_water"] = position

            tasks = [asyncio.create_task(traffic()), asyncio.create_task(reader())]
            await asyncio.sleep(1)
            before = reads
            rebuilt = await run_cli(config, "replay", "--projection", "all", kill_after=600)
            await asyncio.sleep(1)
            during = reads - before
            stop.set()
            await asyncio.gather(*tasks)

        assert rebuilt.returncode == 0, rebuilt.stderr
        assert not problems, problems[:3]
        assert during > 10, f"only {during} reads while rebuilding"
        assert await Generations(redis, config.redis_generation).current() != "t" + tag
        es = AsyncElasticsearch(config.es_url)
        try:
            aliases = await es.indices.get_alias(name=config.es_comments_alias)
            assert list(aliases.body) == [f"{config.es_comments_alias}-v2"]
        finally:
            with contextlib.suppress(Exception):
                await es.indices.delete(index=f"test-r*-{tag}-v*")
            await es.close()

        async def verified() -> bool:
            return (await run_cli(config, "verify", "--wait", "5")).returncode == 0

        await eventually(verified, 90)
    finally:
        stop.set()
        for proc in procs:
            stop_service(proc)
