"""The relay and the projector runner on the real broker, PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from prometheus_client import REGISTRY
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis
from structlog.testing import capture_logs

from event_store.partitioning import partition_for
from event_store.port import PendingEvent
from event_store.postgres import append_pending
from kernel.settings import Settings
from projectors import parking
from projectors import runner as runner_module
from projectors.fence import SwitchFence
from projectors.redis_keys import prefix
from projectors.redis_scores import RedisScoresProjection
from projectors.runner import LAG_EVENTS
from schemas.events import CommentPosted, VoteCast
from tally.processes import spawn
from tests.pipeline import (
    consume,
    env_of,
    eventually,
    isolated,
    publish,
    record_history,
    redis_matches_store,
    run_cli,
    runner_for,
    running,
)


async def test_the_relay_publishes_in_order_keyed_by_comment_and_empties_the_outbox(
    settings: Settings, apool: AsyncConnectionPool[Any]
) -> None:
    config = isolated(settings)
    history = await record_history(apool, 80, seed=1)
    assert await publish(config, apool) == len(history)
    seen: dict[int, list[tuple[int, int, bytes]]] = defaultdict(list)
    for m in await consume(config, len(history)):
        h = dict(m.headers)
        seen[m.partition].append((int(h["position"]), int(h["prev"]), m.key))
    by_position = {e.position: e for e in history}
    for partition, messages in seen.items():
        positions = [p for p, _, _ in messages]
        assert positions == sorted(positions)  # in position order within a partition
        assert [prev for _, prev, _ in messages] == [0, *positions[:-1]]  # the prev chain
        for position, _, key in messages:
            comment_id = by_position[position].event.comment_id
            assert key == str(comment_id).encode()
            assert partition_for(comment_id, config.kafka_partitions) == partition
    async with apool.connection() as conn:
        left = await (await conn.execute("SELECT count(*) FROM outbox")).fetchone()
    assert left == (0,)


async def test_a_lost_topic_is_healed_from_the_event_store(
    settings: Settings, apool: AsyncConnectionPool[Any], redis: Redis
) -> None:
    config = isolated(settings)
    await record_history(apool, 120, seed=2)
    await publish(config, apool)
    # The broker loses everything published so far, before any projector read it.
    admin = AIOKafkaAdminClient(bootstrap_servers=config.kafka_bootstrap)
    await admin.start()
    await admin.delete_topics([config.kafka_topic])
    await admin.close()
    await record_history(apool, 60, seed=3)
    await publish(config, apool)  # recreates the topic; prev still points back
    projection = RedisScoresProjection(redis, config.redis_generation)
    async with running(runner_for(projection, config, apool)):
        await eventually(lambda: redis_matches_store(redis, config.redis_generation, apool))


async def test_a_topic_recreated_with_fewer_partitions_is_healed_on_every_old_partition(
    settings: Settings,
    apool: AsyncConnectionPool[Any],
    redis: Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The broker lost its data and the topic came back with 4 partitions before the relay
    published anything under that mapping: the projector, still on the 6-partition mapping, is
    assigned 4 partitions. Its watchdog must heal all 6 from the store, not the 4 assigned."""
    monkeypatch.setattr(runner_module, "STALL_SECONDS", 1.0)
    config = isolated(settings, kafka_partitions=6)
    before = await record_history(apool, 80, seed=7)
    await publish(config, apool)
    projection = RedisScoresProjection(redis, config.redis_generation)
    async with running(runner_for(projection, config, apool)):
        await eventually(lambda: redis_matches_store(redis, config.redis_generation, apool))
    admin = AIOKafkaAdminClient(bootstrap_servers=config.kafka_bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([config.kafka_topic])
        await eventually(lambda: _recreated(admin, config.kafka_topic, 4))
    finally:
        await admin.close()
    head = before[-1].position
    later = [e for e in await record_history(apool, 80, seed=8) if e.position > head]
    # Not published: only the store has them. Some lie beyond partition 3 of the old mapping.
    assert any(partition_for(e.event.comment_id, 6) >= 4 for e in later)
    # A consumer group of its own: the broker is slow to let the old group's members go.
    again = isolated(
        settings,
        kafka_topic=config.kafka_topic,
        redis_generation=config.redis_generation,
        kafka_partitions=6,
    )
    async with running(runner_for(projection, again, apool)):
        await eventually(lambda: redis_matches_store(redis, config.redis_generation, apool), 60)


async def _recreated(admin: AIOKafkaAdminClient, topic: str, partitions: int) -> bool:
    """Create ``topic`` anew with ``partitions``; False while the broker still deletes it."""
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    except TopicAlreadyExistsError:
        return False
    return True


async def test_redelivered_batches_change_nothing(
    settings: Settings, apool: AsyncConnectionPool[Any], redis: Redis
) -> None:
    config = isolated(settings)
    await record_history(apool, 100, seed=4)
    published = await publish(config, apool)
    projection = RedisScoresProjection(redis, config.redis_generation)
    async with running(runner_for(projection, config, apool)):
        await eventually(lambda: redis_matches_store(redis, config.redis_generation, apool))
    # Everything again: a new consumer group reads the topic from the start, and the runner has
    # forgotten its positions, so every event reaches the projection a second time.
    again = isolated(
        settings, kafka_topic=config.kafka_topic, redis_generation=config.redis_generation
    )
    async with apool.connection() as conn:
        await conn.execute("TRUNCATE projection_partitions, projection_epochs")
    before = _sample("tally_projection_applied_total")
    async with running(runner_for(projection, again, apool)):
        await eventually(
            lambda: _at_least(_sample("tally_projection_applied_total") - before, published), 60
        )
    assert await redis_matches_store(redis, config.redis_generation, apool)


def _sample(metric: str, projection: str = "redis") -> float:
    return REGISTRY.get_sample_value(metric, {"projection": projection}) or 0.0


async def _at_least(value: float, wanted: float) -> bool:
    return value >= wanted


async def test_a_poison_event_is_parked_with_its_comments_later_events_and_others_go_on(
    settings: Settings, apool: AsyncConnectionPool[Any], redis: Redis
) -> None:
    config = isolated(settings)
    history = await record_history(apool, 80, seed=5)
    votes = [e for e in history if hasattr(e.event, "user_id")]
    poison = votes[0]
    victim = str(poison.event.comment_id)
    async with apool.connection() as conn:
        # As if a newer writer had stored an event type this projector does not know.
        await conn.execute(
            "UPDATE events SET type = 'VoteExploded',"
            ' data = data || \'{"type": "VoteExploded"}\','
            ' metadata = metadata || \'{"correlation_id": "req-poison"}\''
            " WHERE position = %s",
            (poison.position,),
        )
    await publish(config, apool)
    projection = RedisScoresProjection(redis, config.redis_generation)
    later = [
        e.position
        for e in history
        if str(e.event.comment_id) == victim and e.position > poison.position
    ]

    async def parked() -> bool:
        rows = await parking.list_parked(apool, "redis", limit=1000)
        return {r[1] for r in rows} == {poison.position, *later}

    with capture_logs() as logs:
        async with running(runner_for(projection, config, apool)):
            await eventually(parked)
            # The request that caused the poison event is named in the projector's log.
            assert any(
                entry["event"] == "events_parked" and entry["correlation_ids"] == ["req-poison"]
                for entry in logs
            ), [e for e in logs if e["event"] == "events_parked"]
            others = [e for e in history if str(e.event.comment_id) != victim]
            last_other = others[-1]
            base = prefix(config.redis_generation, last_other.event.commentable_id)
            key = f"{base}c:{last_other.event.comment_id}"
            await eventually(lambda: _pos_at_least(redis, key, last_other.position))
    # Fix the event (as a deploy of a newer projector would) and retry the parked ones.
    async with apool.connection() as conn:
        await conn.execute(
            "UPDATE events SET type = %s, data = data || jsonb_build_object('type', %s::text)"
            " WHERE position = %s",
            (type(poison.event).__name__, type(poison.event).__name__, poison.position),
        )
    # `tally dlq retry` applies like a live batch: not while a replay is switching.
    fence = SwitchFence(config.pg_dsn, "redis")
    async with fence.exclusive():
        retry = spawn(["dlq", "retry", "--projection", "redis"], env_of(config))
        await eventually(lambda: _waits_for_a_fence(apool), 60)  # it asked, and waits
        assert retry.poll() is None
        assert len(await parking.list_parked(apool, "redis")) == 1 + len(later)
    await fence.close()
    assert await asyncio.to_thread(retry.wait, 60) == 0
    assert await parking.list_parked(apool, "redis") == []
    assert await redis_matches_store(redis, config.redis_generation, apool)


async def _waits_for_a_fence(pool: AsyncConnectionPool[Any]) -> bool:
    """Does some session wait for a switch-fence lock (advisory, first key 31249)?"""
    async with pool.connection() as conn:
        row = await (
            await conn.execute(
                "SELECT count(*) FROM pg_locks"
                " WHERE locktype = 'advisory' AND classid = 31249 AND NOT granted"
            )
        ).fetchone()
    return bool(row and row[0])


async def _pos_at_least(redis: Redis, key: str, position: int) -> bool:
    value = await redis.hget(key, "pos")
    return value is not None and int(value) >= position


async def test_a_quiet_spell_after_traffic_is_not_reported_as_a_gap(
    settings: Settings,
    apool: AsyncConnectionPool[Any],
    redis: Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runner_module, "STALL_SECONDS", 1.0)
    config = isolated(settings)
    # One comment: every event in one partition, so the others never see the head.
    comment = uuid.uuid4()
    events = [CommentPosted(comment_id=comment, commentable_id="p", author_id="a", content="x")]
    events += [
        VoteCast(comment_id=comment, commentable_id="p", user_id=f"u{n}", value=1, previous=0)
        for n in range(5)
    ]
    async with apool.connection() as conn, conn.transaction(), conn.cursor() as cur:
        await append_pending(
            cur,
            [
                PendingEvent(stream_id=f"s{n}", stream_version=1, event=event)
                for n, event in enumerate(events)
            ],
        )
    await publish(config, apool)
    healed_before = _healed("redis")
    projection = RedisScoresProjection(redis, config.redis_generation)
    with capture_logs() as logs:
        async with running(runner_for(projection, config, apool)):
            await eventually(lambda: redis_matches_store(redis, config.redis_generation, apool))
            looked = _sample("tally_projection_watchdog_checks_total")
            # Quiet for longer than the watchdog waits: it looks, twice, and finds nothing.
            await eventually(
                lambda: _at_least(_sample("tally_projection_watchdog_checks_total") - looked, 2)
            )
    assert not [entry for entry in logs if entry["event"] == "gap_healing"]
    assert _healed("redis") == healed_before


def _healed(projection: str) -> float:
    """Ranges the runners of this process healed for ``projection``, whatever the cause."""
    return sum(
        REGISTRY.get_sample_value(
            "tally_projection_gaps_healed_total", {"projection": projection, "cause": cause}
        )
        or 0.0
        for cause in ("gap", "standstill")
    )


async def test_a_restarted_projector_reports_no_lag_for_what_it_applied_before(
    settings: Settings, apool: AsyncConnectionPool[Any], redis: Redis
) -> None:
    config = isolated(settings)
    await record_history(apool, 60, seed=6)
    await publish(config, apool)
    projection = RedisScoresProjection(redis, config.redis_generation)
    async with running(runner_for(projection, config, apool)):
        await eventually(lambda: redis_matches_store(redis, config.redis_generation, apool))
    LAG_EVENTS.labels("redis").set(-1)
    # Restarted with nothing new to consume: its lag is 0 events, not the whole log.
    async with running(runner_for(projection, config, apool)):

        async def no_lag() -> bool:
            return (
                REGISTRY.get_sample_value("tally_projection_lag_events", {"projection": "redis"})
                == 0
            )

        await eventually(no_lag, 60)  # the group rejoin can take a while


async def test_after_dlq_retry_the_live_runner_stops_holding_the_comment(
    settings: Settings, apool: AsyncConnectionPool[Any], redis: Redis
) -> None:
    config = isolated(settings)
    history = await record_history(apool, 60, seed=15)
    poison = next(e for e in history if hasattr(e.event, "user_id"))
    victim = poison.event.comment_id
    async with apool.connection() as conn:
        await conn.execute(
            "UPDATE events SET type = 'VoteExploded', data = data || '{\"type\": \"VoteExploded\"}'"
            " WHERE position = %s",
            (poison.position,),
        )
    await publish(config, apool)
    projection = RedisScoresProjection(redis, config.redis_generation)
    async with running(runner_for(projection, config, apool)):
        await eventually(lambda: _parked_includes(apool, poison.position))
        async with apool.connection() as conn:  # the fix ships; the operator retries
            await conn.execute(
                "UPDATE events SET type = %s, data = data || jsonb_build_object('type', %s::text)"
                " WHERE position = %s",
                (type(poison.event).__name__, type(poison.event).__name__, poison.position),
            )
        retried = await run_cli(config, "dlq", "retry", "--projection", "redis")
        assert retried.returncode == 0, retried.stderr
        # A new vote on the comment reaches the same, still running, runner: applied, not held.
        vote = VoteCast(
            comment_id=victim,
            commentable_id=poison.event.commentable_id,
            user_id="late",
            value=1,
            previous=0,
        )
        async with apool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            [position] = await append_pending(
                cur, [PendingEvent(stream_id=f"vote-{victim}-late", stream_version=1, event=vote)]
            )
        await publish(config, apool)
        key = f"{prefix(config.redis_generation, vote.commentable_id)}c:{victim}"
        await eventually(lambda: _pos_at_least(redis, key, position))
    assert await parking.list_parked(apool, "redis") == []
    assert await redis_matches_store(redis, config.redis_generation, apool)


async def _parked_includes(pool: AsyncConnectionPool[Any], position: int) -> bool:
    return position in {r.position for r in await parking.list_parked(pool, "redis")}
