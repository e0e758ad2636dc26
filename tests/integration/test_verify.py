"""``tally verify`` agrees with correct read models and names a corrupted one."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
from elasticsearch import AsyncElasticsearch
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from event_store.postgres import PostgresEventStore
from kernel.settings import Settings
from projectors.es_comments import EsCommentsProjection
from projectors.es_votes import EsVotesProjection
from projectors.redis_keys import prefix
from projectors.redis_scores import RedisScoresProjection
from projectors.verify import verify
from tests.pipeline import record_history, run_cli


async def test_verify_passes_then_names_a_corrupted_counter(
    settings: Settings, clean_store: AsyncConnectionPool[Any], redis: Redis
) -> None:
    tag = uuid.uuid4().hex[:8]
    config = msgspec.structs.replace(
        settings,
        redis_generation=f"v{tag}",
        es_comments_alias=f"test-vc-{tag}",
        es_votes_alias=f"test-vv-{tag}",
    )
    history = await record_history(clean_store, 300, seed=21)
    es = AsyncElasticsearch(settings.es_url, request_timeout=30)
    projections = [
        RedisScoresProjection(redis, config.redis_generation),
        EsCommentsProjection(es, config.es_comments_alias),
        EsVotesProjection(es, config.es_votes_alias),
    ]
    try:
        for projection in projections:
            await projection.setup()
            for start in range(0, len(history), 50):
                await projection.apply(history[start : start + 50])

        async def caught_up(projection: str) -> int:
            return history[-1].position

        async def check() -> list[Any]:
            _, reports = await verify(
                PostgresEventStore(clean_store), projections, caught_up, wait_seconds=5
            )
            return reports

        reports = await check()
        assert all(r.ok for r in reports), [r.mismatches for r in reports]
        assert all(r.checked > 0 for r in reports)

        victim = next(e for e in history if hasattr(e.event, "user_id")).event
        key = f"{prefix(config.redis_generation, victim.commentable_id)}c:{victim.comment_id}"
        await redis.hincrby(key, "up", 7)
        redis_report = (await check())[0]
        assert len(redis_report.mismatches) == 1
        assert str(victim.comment_id) in redis_report.mismatches[0]

        cli = await run_cli(
            config, "verify", "--projection", "redis", "--wait", "1", kill_after=120
        )
        assert cli.returncode == 1, cli.stdout + cli.stderr
        assert str(victim.comment_id) in cli.stdout
    finally:
        await es.indices.delete(index=f"test-vc-{tag}-v1,test-vv-{tag}-v1")
        await es.close()
