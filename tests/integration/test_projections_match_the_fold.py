"""Guarantee 4 against the real stores: however events are duplicated, redelivered or batched,
the Redis and Elasticsearch projections equal a pure fold of the history."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from elasticsearch import AsyncElasticsearch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from kernel.settings import Settings
from projectors import ranking
from projectors.es_comments import EsCommentsProjection
from projectors.es_votes import EsVotesProjection
from projectors.fold import CommentView, fold, user_votes
from projectors.redis_keys import prefix
from projectors.redis_scores import RedisRebuild, RedisScoresProjection
from schemas.envelope import Envelope
from tests.histories import deliveries, histories

SLOW = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture
async def es(settings: Settings) -> AsyncIterator[AsyncElasticsearch]:
    client = AsyncElasticsearch(settings.es_url, request_timeout=30)
    yield client
    await client.close()


async def redis_state(
    redis: Redis, generation: str, views: dict[Any, CommentView]
) -> dict[str, Any]:
    state: dict[str, Any] = {}
    for comment_id, view in views.items():
        base = prefix(generation, view.commentable_id)
        raw = await redis.hgetall(f"{base}c:{comment_id}")
        votes = await redis.hgetall(f"{base}v:{comment_id}")
        ranks = {s: await redis.zscore(f"{base}rank:{s}", str(comment_id)) for s in ranking.SORTS}
        state[str(comment_id)] = (raw, votes, ranks)
    return state


@SLOW
@given(data=st.data())
async def test_redis_projection_equals_the_fold(data: st.DataObject, redis: Redis) -> None:
    history: list[Envelope] = data.draw(histories())
    generation = f"t{uuid.uuid4().hex[:10]}"
    projection = RedisScoresProjection(redis, generation)
    await projection.setup()
    for batch in data.draw(deliveries(history)):
        await projection.apply(batch)
    await assert_redis_equals_fold(redis, generation, history)


@SLOW
@given(data=st.data())
async def test_a_rebuild_equals_the_fold_however_often_it_is_interrupted(
    data: st.DataObject, redis: Redis
) -> None:
    history: list[Envelope] = data.draw(histories())
    generation = f"r{uuid.uuid4().hex[:10]}"
    n = len(history)
    # The first run stops anywhere; the recorded position lags what it applied, so the next run
    # re-reads from an earlier point, with other batch sizes. Then ranking, then catch-up
    # batches that overlap again.
    stopped = data.draw(st.integers(0, n))
    resumed = data.draw(st.integers(0, stopped))
    ranked_at = data.draw(st.integers(resumed, n))
    overlap = data.draw(st.integers(0, ranked_at))
    runs = [(0, stopped), (resumed, ranked_at), (overlap, n)]
    rebuild = RedisRebuild(redis, generation)
    await rebuild.setup()
    for run, (start, end) in enumerate(runs):
        size = data.draw(st.integers(1, 8), label=f"batch size of run {run}")
        for at in range(start, end, size):
            await rebuild.apply(history[at : min(at + size, end)])
        if run == 1:
            await rebuild.rank_all()
    await assert_redis_equals_fold(redis, generation, history)


async def assert_redis_equals_fold(redis: Redis, generation: str, history: list[Envelope]) -> None:
    """Counters, votes and every ranking of ``generation`` equal the fold of ``history``."""
    views = fold(history)
    votes = user_votes(history)
    state = await redis_state(redis, generation, views)
    for comment_id, view in views.items():
        raw, stored_votes, ranks = state[str(comment_id)]
        assert int(raw[b"up"]) == view.up and int(raw[b"down"]) == view.down
        assert int(raw[b"score"]) == view.score and int(raw[b"pos"]) == view.position
        assert raw[b"deleted"] == (b"1" if view.deleted else b"0")
        expected_votes = {
            u.encode(): str(v).encode() for (c, u), v in votes.items() if c == comment_id
        }
        assert stored_votes == expected_votes
        if view.deleted:
            assert all(score is None for score in ranks.values())
        else:
            assert view.created_at is not None
            expected = ranking.scores(view.up, view.down, int(view.created_at.timestamp() * 1000))
            for sort, score in ranks.items():
                assert score == pytest.approx(expected[sort], rel=1e-9, abs=1e-9), sort


@SLOW
@given(data=st.data())
async def test_elasticsearch_projections_equal_the_fold(
    data: st.DataObject, es: AsyncElasticsearch
) -> None:
    history: list[Envelope] = data.draw(histories())
    tag = uuid.uuid4().hex[:10]
    comments = EsCommentsProjection(es, alias=f"test-comments-{tag}")
    votes = EsVotesProjection(es, alias=f"test-votes-{tag}")
    await comments.setup()
    await votes.setup()
    try:
        for batch in data.draw(deliveries(history)):
            await comments.apply(batch)
            await votes.apply(batch)
        views = fold(history)
        if views:
            found = await es.mget(index=comments.alias, ids=[str(c) for c in views])
            stored = {d["_id"]: d["_source"] for d in found["docs"] if d.get("found")}
            for comment_id, view in views.items():
                doc = stored[str(comment_id)]
                assert (doc["up"], doc["down"], doc["score"], doc["deleted"], doc["position"]) == (
                    view.up,
                    view.down,
                    view.score,
                    view.deleted,
                    view.position,
                )
                assert doc["content"] == view.content
        vote_events = {str(e.event_id) for e in history if hasattr(e.event, "user_id")}
        if vote_events:
            found = await es.mget(index=votes.alias, ids=sorted(vote_events))
            assert all(d.get("found") for d in found["docs"])
    finally:
        await es.indices.delete(index=f"test-comments-{tag}-v1,test-votes-{tag}-v1")
