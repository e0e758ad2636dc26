"""The reconciler finds what differs from the log in each real read model and repairs it, through
the live projections' position guards."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import msgspec
import pytest
from elasticsearch import AsyncElasticsearch
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from command_api.deciders.vote import CastVote
from command_api.executor import CommandExecutor
from command_api.work import Accepted, WorkItem
from event_store.postgres import PostgresEventStore
from event_store.seed import SeedPlan, seed
from kernel.settings import Settings
from projectors.es_comments import EsCommentsProjection
from projectors.es_votes import EsVotesProjection
from projectors.fence import SwitchFence
from projectors.judging import CommentHistory
from projectors.reconciler import Reconciler, ReconcilerConfig
from projectors.redis_keys import comment_key, votes_key
from projectors.redis_scores import RedisScoresProjection
from projectors.verify import verify
from schemas.envelope import Envelope
from schemas.events import VoteCast, VoteChanged, VoteRetracted


@pytest.fixture
async def projected(
    settings: Settings, clean_store: AsyncConnectionPool[Any], redis: Redis
) -> AsyncIterator[tuple[Settings, AsyncElasticsearch, list[Any], Any]]:
    """A seeded log applied to all three read models (by the projections themselves)."""
    tag = uuid.uuid4().hex[:8]
    config = msgspec.structs.replace(
        settings,
        redis_generation=f"r{tag}",
        es_comments_alias=f"test-rc-{tag}",
        es_votes_alias=f"test-rv-{tag}",
    )
    await seed(config.pg_dsn, SeedPlan(events=1500, comments=60, users=200, commentables=3))
    store = PostgresEventStore(clean_store)
    history = [e async for batch in store.read_all() for e in batch]
    es = AsyncElasticsearch(settings.es_url, request_timeout=30)
    projections = [
        RedisScoresProjection(redis, config.redis_generation),
        EsCommentsProjection(es, config.es_comments_alias),
        EsVotesProjection(es, config.es_votes_alias),
    ]
    for projection in projections:
        await projection.setup()
        await projection.mark_intact()
        for start in range(0, len(history), 500):
            await projection.apply(history[start : start + 500])
    await es.indices.refresh(index=[config.es_comments_alias, config.es_votes_alias])
    try:
        yield config, es, projections, history
    finally:
        for alias in (config.es_comments_alias, config.es_votes_alias):
            await es.indices.delete(index=f"{alias}-v1")
        await es.close()


async def test_the_reconciler_repairs_every_read_model_and_verify_then_agrees(
    projected: Any, clean_store: AsyncConnectionPool[Any], redis: Redis
) -> None:
    config, es, projections, history = projected
    head = history[-1].position
    views: dict[str, Any] = {}
    for envelope in history:
        views.setdefault(str(envelope.event.comment_id), envelope.event.commentable_id)
    ids = sorted(views)
    gen = config.redis_generation
    # Break each read model in its own way.
    await redis.hincrby(comment_key(gen, views[ids[0]], ids[0]), "up", 5)  # a counter drifts
    await redis.delete(comment_key(gen, views[ids[1]], ids[1]))  # a comment lost
    doc = (await es.get(index=config.es_comments_alias, id=ids[2]))["_source"]
    await es.index(  # a wrong document written at its own version, as the projection would
        index=config.es_comments_alias,
        id=ids[2],
        document=doc | {"down": 99},
        version=doc["position"],
        version_type="external_gte",
    )
    vote = next(e for e in history if isinstance(e.event, VoteCast | VoteChanged | VoteRetracted))
    await es.delete(index=config.es_votes_alias, id=str(vote.event_id))
    await es.indices.refresh(index=[config.es_comments_alias, config.es_votes_alias])

    store = PostgresEventStore(clean_store)
    found = {}
    for projection in projections:
        reconciler = Reconciler(
            projection,
            store,
            SwitchFence(config.pg_dsn, projection.name),
            lambda: head,
            ReconcilerConfig(sweep_batch=10_000),
        )
        found[projection.name] = await reconciler.run_once()
        await reconciler._fence.close()
    assert {f.comment_id for f in found["redis"]} == {ids[0], ids[1]}
    assert {f.comment_id for f in found["comments"]} == {ids[2]}
    assert [f.detail for f in found["votes"]] == [f"no document for vote event {vote.event_id}"]
    await es.indices.refresh(index=[config.es_comments_alias, config.es_votes_alias])

    async def caught_up(projection: str) -> int:
        return head

    _, reports = await verify(
        PostgresEventStore(clean_store), projections, caught_up, wait_seconds=0
    )
    assert all(r.ok for r in reports), [r.mismatches[:3] for r in reports]


async def test_a_repair_never_moves_a_comment_backwards(
    projected: Any, clean_store: AsyncConnectionPool[Any], redis: Redis
) -> None:
    config, _, projections, history = projected
    redis_projection = projections[0]
    comment = history[0].event
    key = comment_key(config.redis_generation, comment.commentable_id, comment.comment_id)
    # As if the live projection had applied a later event while the repair was being decided.
    ahead = history[-1].position + 100
    await redis.hset(key, mapping={"pos": ahead, "up": 123})
    read = await PostgresEventStore(clean_store).read_comments([str(comment.comment_id)])
    history_of = {c: CommentHistory(h) for c, h in read.items()}
    findings = await redis_projection.reconcile(history_of, history[-1].position, repair=True)
    assert findings == []
    assert await redis.hmget(key, ["pos", "up"]) == [str(ahead).encode(), b"123"]


class CountingStore(PostgresEventStore):
    """The real store, counting the events the reconciler reads."""

    events_read = 0

    async def read_comments(
        self,
        comment_ids: Sequence[str],
        until: int | None = None,
        after: Mapping[str, int] | None = None,
    ) -> dict[str, list[Envelope]]:
        histories = await super().read_comments(comment_ids, until, after)
        self.events_read += sum(map(len, histories.values()))
        return histories


async def _more_votes(
    pool: AsyncConnectionPool[Any], comment_ids: list[str], count: int
) -> list[Envelope]:
    """``count`` new votes on ``comment_ids``, through the command executor; their events."""
    store = PostgresEventStore(pool)
    head = await store.head()
    tag = uuid.uuid4().hex[:6]
    items = [
        WorkItem(
            command=CastVote(
                comment_id=uuid.UUID(comment_ids[n % len(comment_ids)]),
                user_id=f"{tag}-{n}",
                value=1,
            ),
            user_id=f"{tag}-{n}",
        )
        for n in range(count)
    ]
    outcomes = await CommandExecutor(pool, 3600).run(items)
    assert all(isinstance(o, Accepted) for o in outcomes), outcomes
    return [e async for batch in store.read_all(after=head) for e in batch]


async def test_a_later_pass_reads_only_new_events_and_still_finds_what_drifted(
    projected: Any, apool: AsyncConnectionPool[Any], redis: Redis
) -> None:
    config, _, projections, history = projected
    redis_projection = projections[0]
    store = CountingStore(apool)
    head = history[-1].position
    low_water = [head]
    reconciler = Reconciler(
        redis_projection,
        store,
        SwitchFence(config.pg_dsn, "redis"),
        lambda: low_water[0],
        ReconcilerConfig(sweep_batch=10_000),
    )
    try:
        assert await reconciler.run_once() == []
        assert store.events_read == len(history)  # the first pass reads every history whole
        commentables = {str(e.event.comment_id): e.event.commentable_id for e in history}
        hot = sorted(commentables)[:3]
        new = await _more_votes(apool, hot, 30)
        await redis_projection.apply(new)
        # A counter of a hot comment drifts, then the next pass.
        key = comment_key(config.redis_generation, commentables[hot[0]], hot[0])
        await redis.hincrby(key, "up", 2)
        store.events_read = 0
        low_water[0] = new[-1].position
        found = await reconciler.run_once()
        # The recent part reads the 30 new events, not the histories; the sweep after it reads
        # nothing (every fold is up to date).
        assert store.events_read == len(new)
        assert {f.comment_id for f in found} == {hot[0]}
        assert await reconciler.run_once() == []  # repaired
    finally:
        await reconciler._fence.close()


async def test_a_drifted_old_vote_is_found_once_the_kept_fold_is_read_whole_again(
    projected: Any, clean_store: AsyncConnectionPool[Any], redis: Redis
) -> None:
    config, _, projections, history = projected
    redis_projection = projections[0]
    head = history[-1].position
    for envelope in history:  # a vote that stands in Redis
        vote = envelope.event
        if isinstance(vote, VoteCast):
            votes = votes_key(config.redis_generation, vote.commentable_id, vote.comment_id)
            if await redis.hget(votes, vote.user_id):
                break
    for kept_seconds, finds in ((600.0, False), (0.0, True)):
        reconciler = Reconciler(
            redis_projection,
            PostgresEventStore(clean_store),
            SwitchFence(config.pg_dsn, "redis"),
            lambda: head,
            ReconcilerConfig(sweep_batch=10_000, kept_seconds=kept_seconds),
        )
        try:
            assert await reconciler.run_once() == []
            # One old voter's vote flips; the count of votes stays the same.
            value = int(await redis.hget(votes, vote.user_id) or 0)
            await redis.hset(votes, vote.user_id, -value)
            found = {f.comment_id for f in await reconciler.run_once()}
            assert (str(vote.comment_id) in found) is finds, found
            if not finds:
                await redis.hset(votes, vote.user_id, value)
        finally:
            await reconciler._fence.close()
