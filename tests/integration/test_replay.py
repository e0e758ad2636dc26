"""``tally replay`` against the real stores: exact reads, resuming after a kill, upcasting."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import msgspec
import psycopg
import pytest
from elasticsearch import AsyncElasticsearch
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from event_store.postgres import PostgresEventStore
from event_store.seed import SeedPlan, seed
from kernel.settings import Settings
from projectors.es_comments import EsCommentsProjection
from projectors.es_indices import COMMENTS_INDEX
from projectors.generations import Generations
from projectors.rebuilds import IndexRebuild, RedisGenerationRebuild
from projectors.redis_keys import prefix
from projectors.replay import replay
from schemas import codec
from schemas.codec import decode_envelope
from schemas.events import CommentPosted
from tally.processes import spawn
from tests.pipeline import consume, env_of, isolated, publish, run_cli


async def test_the_fast_reader_returns_events_exactly_as_stored(
    clean_store: AsyncConnectionPool[Any],
) -> None:
    store = PostgresEventStore(clean_store)
    tricky = CommentPosted(
        comment_id=uuid.uuid4(),
        commentable_id="c\\1",
        author_id="tab\there",
        content='new\nline, tab\t, back\\slash, quote ", snowman \u2603, \\N, \\t',
    )
    await store.append("comment-x\\y", 0, [tricky], correlation_id="corr\\\t\n")
    [[envelope]] = [batch async for batch in store.read_all()]
    assert envelope.event == tricky
    assert envelope.stream_id == "comment-x\\y"
    assert envelope.correlation_id == "corr\\\t\n" and envelope.causation_id is None


async def test_a_replay_killed_half_way_resumes_where_it_stopped(
    settings: Settings, clean_store: AsyncConnectionPool[Any], redis: Redis
) -> None:
    config = isolated(settings)
    _, head = await seed(
        config.pg_dsn, SeedPlan(events=60_000, commentables=20, comments=500, users=3_000), False
    )
    first = spawn(["replay", "--projection", "redis", "--batch-size", "500"], env_of(config))
    stopped_at = 0
    try:
        deadline = time.monotonic() + 120
        while stopped_at < head // 4 and time.monotonic() < deadline:
            assert first.poll() is None, "the replay finished before it could be interrupted"
            async with clean_store.connection() as conn:
                cur = await conn.execute("SELECT position FROM replays")
                row = await cur.fetchone()
            stopped_at = int(row[0]) if row else 0
            await asyncio.sleep(0.02)
    finally:
        first.kill()
        first.wait()
    async with clean_store.connection() as conn:
        cur = await conn.execute("SELECT target, position FROM replays")
        row = await cur.fetchone()
    assert row is not None
    target, recorded = str(row[0]), int(row[1])
    assert head // 4 <= recorded < head

    second = await run_cli(config, "replay", "--projection", "redis")
    assert second.returncode == 0, second.stderr
    assert f"into {target}: resuming at position {recorded:,}" in second.stderr
    assert f"redis: {head - recorded:,} events into {target}" in second.stderr
    assert await Generations(redis, config.redis_generation).current() == target

    verified = await run_cli(config, "verify", "--projection", "redis")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    async with clean_store.connection() as conn:
        cur = await conn.execute("SELECT count(*) FROM replays")
        assert await cur.fetchone() == (0,)


async def test_a_second_replay_of_the_same_projection_is_refused_while_one_runs(
    settings: Settings, clean_store: AsyncConnectionPool[Any], redis: Redis
) -> None:
    config = isolated(settings)
    await seed(config.pg_dsn, SeedPlan(events=2_000, comments=50, users=100), False)
    async with await psycopg.AsyncConnection.connect(config.pg_dsn, autocommit=True) as running:
        # What a running `tally replay --projection redis` holds for its whole run.
        await running.execute("SELECT pg_advisory_lock(31250, hashtext('redis'))")
        refused = await run_cli(config, "replay", "--projection", "redis")
        assert refused.returncode == 1
        assert "another `tally replay` of redis is running" in refused.stdout + refused.stderr
        async with clean_store.connection() as conn:
            cur = await conn.execute("SELECT count(*) FROM replays")
            assert await cur.fetchone() == (0,)  # it started nothing
    # Once the first is over (its connection gone), a replay goes ahead.
    again = await run_cli(config, "replay", "--projection", "redis")
    assert again.returncode == 0, again.stderr
    assert await Generations(redis, config.redis_generation).current() != config.redis_generation


@pytest.fixture
def vote_v1_called_the_user_voter(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend the current schema is 2, and that version 1 of VoteCast said ``voter``."""

    def rename_voter(raw: dict[str, Any]) -> dict[str, Any]:
        raw["user_id"] = raw.pop("voter")
        return raw

    monkeypatch.setattr(codec, "CURRENT_SCHEMA_VERSION", 2)
    monkeypatch.setitem(codec.UPCASTERS, ("VoteCast", 1), rename_voter)
    monkeypatch.setitem(codec.UPCASTERS, ("CommentPosted", 1), lambda raw: raw)


async def test_an_old_event_is_upcast_in_replay_and_in_live_projection(
    settings: Settings,
    clean_store: AsyncConnectionPool[Any],
    redis: Redis,
    vote_v1_called_the_user_voter: None,
) -> None:
    config = isolated(settings)
    comment_id = uuid.uuid4()
    old_events = [
        ("CommentPosted", {"author_id": "ann", "content": "old times"}),
        ("VoteCast", {"voter": "bob", "value": 1, "previous": 0}),
    ]
    async with clean_store.connection() as conn:
        for version, (type_name, fields) in enumerate(old_events, start=1):
            data = {"type": type_name, "comment_id": str(comment_id), "commentable_id": "old"}
            await conn.execute(
                "WITH head AS (UPDATE event_head SET position = position + 1 RETURNING position),"
                " e AS (INSERT INTO events (position, event_id, stream_id, stream_version, type,"
                "  schema_version, data, metadata)"
                "  SELECT position, gen_random_uuid(), %s, %s, %s, 1, %s, '{}' FROM head"
                "  RETURNING position)"
                " INSERT INTO outbox (position, key) SELECT position, %s FROM e",
                (
                    f"comment-{comment_id}" if version == 1 else f"vote-{comment_id}-bob",
                    1,
                    type_name,
                    msgspec.json.encode(data | fields).decode(),
                    str(comment_id),
                ),
            )

    es = AsyncElasticsearch(settings.es_url, request_timeout=30)
    alias = f"test-up-{uuid.uuid4().hex[:8]}"
    try:
        await replay(config.pg_dsn, RedisGenerationRebuild(redis, config.redis_generation))
        generation = await Generations(redis, config.redis_generation).current()
        base = prefix(generation, "old")
        assert await redis.hmget(f"{base}c:{comment_id}", ["up", "score"]) == [b"1", b"1"]
        assert await redis.hgetall(f"{base}v:{comment_id}") == {b"bob": b"1"}

        rebuild = IndexRebuild(
            "comments", es, alias, COMMENTS_INDEX, lambda index: EsCommentsProjection(es, index)
        )
        await replay(config.pg_dsn, rebuild)
        found = await es.mget(index=alias, ids=[str(comment_id)])
        assert found["docs"][0]["_source"]["up"] == 1

        # Live: the relay publishes the stored JSON as it is; the projector upcasts on decode.
        await publish(config, clean_store)
        got = [decode_envelope(m.value) for m in await consume(config, 2)]
        vote = next(e.event for e in got if e.position == 2)
        assert vote.user_id == "bob" and vote.schema_version == 2  # type: ignore[union-attr]
    finally:
        await es.indices.delete(index=f"{alias}-v1", ignore_unavailable=True)
        await es.close()
