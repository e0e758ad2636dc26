"""The outbox relay: publish recorded events to Kafka in position order, then forget them.

Exactly one relay is leader (a session-level advisory lock on a dedicated connection); the
others stand by and take over within a second or two of the leader's connection ending. The
leader reads outbox rows in position order, publishes each to ``tally.events`` keyed by
``comment_id`` (so a comment's events stay in one partition, in order), waits for Kafka's
acks, and only then deletes the rows. Each message carries, per partition, the position of the
previous event published there (header ``prev``), so projectors can tell lost messages from
duplicates. Delivery is at least once; projections are idempotent by position.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from opentelemetry.trace import SpanKind
from prometheus_client import Counter, Gauge
from psycopg_pool import AsyncConnectionPool

from event_store.partitioning import partition_for
from tally import tracing
from tally.settings import Settings

log = structlog.get_logger(__name__)

RELAY_LOCK = 0x7A11_0001  # advisory lock key of the relay leader

PUBLISHED = Counter("tally_relay_published_total", "Events published to Kafka and acked")
PUBLISH_ERRORS = Counter("tally_relay_publish_errors_total", "Relay batches that failed")
OUTBOX_DEPTH = Gauge("tally_outbox_depth", "Events waiting in the outbox")
OUTBOX_OLDEST = Gauge("tally_outbox_oldest_age_seconds", "Age of the oldest outbox event")
LEADER = Gauge("tally_relay_leader", "1 while this relay is the leader")

_BATCH = """
SELECT o.position, o.key, e.type, convert_to(
    json_build_object(
        'event_id', e.event_id, 'stream_id', e.stream_id, 'stream_version', e.stream_version,
        'position', e.position, 'occurred_at', e.recorded_at,
        'correlation_id', e.metadata->>'correlation_id',
        'causation_id', e.metadata->>'causation_id', 'event', e.data)::text, 'UTF8'),
    e.metadata->>'traceparent', e.metadata->>'correlation_id'
FROM outbox o JOIN events e ON e.position = o.position
ORDER BY o.position LIMIT %s
"""


async def ensure_topic(settings: Settings, topic: str | None = None) -> None:
    """Create the events topic with the configured partitions unless it exists."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(topic or settings.kafka_topic, settings.kafka_partitions, 1)]
        )
    except TopicAlreadyExistsError:
        pass
    finally:
        await admin.close()


def make_producer(settings: Settings) -> AIOKafkaProducer:
    """The relay's producer: acks from all replicas, big batches, idempotence by setting."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        acks="all",
        enable_idempotence=settings.kafka_idempotent_producer,
        linger_ms=2,
        max_batch_size=512 * 1024,
    )


class OutboxRelay:
    """Publishes the outbox while it holds leadership."""

    def __init__(self, settings: Settings, pool: AsyncConnectionPool[Any]) -> None:
        self._settings = settings
        self._pool = pool
        self._last: dict[int, int] = {}
        self._lock_conn: psycopg.AsyncConnection[Any] | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Stand by until leader, then publish until ``stop`` is set or leadership is lost."""
        while not stop.is_set():
            async with self._leadership(stop) as leading:
                if not leading:
                    return
                LEADER.set(1)
                log.info("relay_leader")
                try:
                    await self._lead(stop)
                finally:
                    LEADER.set(0)

    @contextlib.asynccontextmanager
    async def _leadership(self, stop: asyncio.Event) -> AsyncIterator[bool]:
        """Hold the leader lock on a dedicated connection; False when stopped before."""
        announced = False
        while not stop.is_set():
            try:
                conn = await psycopg.AsyncConnection.connect(self._settings.pg_dsn, autocommit=True)
            except psycopg.OperationalError as exc:
                log.warning("relay_db_unavailable", error=str(exc))
                await _sleep(stop, 1.0)
                continue
            try:
                row = await (
                    await conn.execute("SELECT pg_try_advisory_lock(%s)", (RELAY_LOCK,))
                ).fetchone()
                if row and row[0]:
                    self._lock_conn = conn
                    yield True
                    return
                if not announced:
                    log.info("relay_standby")
                    announced = True
            finally:
                await conn.close()
            await _sleep(stop, 1.0)
        yield False

    async def _lead(self, stop: asyncio.Event) -> None:
        settings = self._settings
        producer = make_producer(settings)
        await producer.start()
        try:
            await self._load_partitions()
            checked = 0.0
            while not stop.is_set():
                if time.monotonic() - checked > 1.0:
                    assert self._lock_conn is not None
                    await self._lock_conn.execute("SELECT 1")  # still leader?
                    await self._update_gauges()
                    checked = time.monotonic()
                try:
                    published = await self.publish_once(producer)
                except KafkaError as exc:
                    PUBLISH_ERRORS.inc()
                    log.warning("relay_publish_failed", error=str(exc))
                    await self._load_partitions()
                    await _sleep(stop, 1.0)
                    with contextlib.suppress(KafkaError, OSError):
                        await ensure_topic(settings)
                    continue
                if not published:
                    await _sleep(stop, settings.relay_poll_interval_ms / 1000)
        except psycopg.OperationalError as exc:
            log.error("relay_lost_database", error=str(exc))
        finally:
            await producer.stop()
            if self._lock_conn is not None:
                with contextlib.suppress(psycopg.Error):
                    await self._lock_conn.close()

    async def publish_once(self, producer: AIOKafkaProducer) -> int:
        """Publish one batch of outbox rows and delete them once acked; return how many."""
        settings = self._settings
        async with self._pool.connection() as conn:
            cur = await conn.execute(_BATCH, (settings.relay_batch_size,))
            rows = await cur.fetchall()
            if not rows:
                return 0
            partitions = len(await producer.partitions_for(settings.kafka_topic))
            if partitions != settings.kafka_partitions:
                log.error(
                    "topic_partition_count_differs",
                    topic=settings.kafka_topic,
                    partitions=partitions,
                    configured=settings.kafka_partitions,
                )
            last = dict(self._last)
            sends = []
            with tracing.spans_ended() as spans:
                for position, key, type_name, envelope, traceparent, correlation_id in rows:
                    partition = partition_for(key, partitions)
                    headers = [
                        ("type", type_name.encode()),
                        ("position", str(position).encode()),
                        ("prev", str(last.get(partition, 0)).encode()),
                    ]
                    span = tracing.start_message_span(
                        traceparent,
                        f"publish {settings.kafka_topic}",
                        SpanKind.PRODUCER,
                        settings.kafka_topic,
                        partition,
                        position,
                    )
                    spans.append(span)
                    # Tracing off here: pass the stored context on, the chain stays linked.
                    sent_as = traceparent if span is None else tracing.traceparent_of(span)
                    if sent_as:
                        headers.append(("traceparent", sent_as.encode()))
                    if correlation_id:
                        headers.append(("correlation_id", correlation_id.encode()))
                    last[partition] = position
                    sends.append(
                        await producer.send(
                            settings.kafka_topic,
                            bytes(envelope),
                            key=key.encode(),
                            partition=partition,
                            headers=headers,
                        )
                    )
                await asyncio.gather(*sends)
            changed = {p: pos for p, pos in last.items() if self._last.get(p) != pos}
            async with conn.transaction():
                await conn.execute(
                    "DELETE FROM outbox WHERE position BETWEEN %s AND %s",
                    (rows[0][0], rows[-1][0]),
                )
                await conn.execute(
                    "INSERT INTO relay_partitions (partition, last_position)"
                    " SELECT * FROM unnest(%s::int[], %s::int8[])"
                    " ON CONFLICT (partition) DO UPDATE SET last_position = excluded.last_position",
                    (list(changed), list(changed.values())),
                )
            self._last = last
        PUBLISHED.inc(len(rows))
        return len(rows)

    async def _load_partitions(self) -> None:
        async with self._pool.connection() as conn:
            rows = await (
                await conn.execute("SELECT partition, last_position FROM relay_partitions")
            ).fetchall()
        self._last = {int(p): int(pos) for p, pos in rows}

    async def _update_gauges(self) -> None:
        async with self._pool.connection() as conn:
            row = await (
                await conn.execute(
                    # Outbox positions are contiguous, so max - min + 1 counts them cheaply.
                    "SELECT (SELECT max(position) - min(position) + 1 FROM outbox),"
                    " (SELECT extract(epoch FROM now() - e.recorded_at) FROM outbox o"
                    "  JOIN events e ON e.position = o.position ORDER BY o.position LIMIT 1)"
                )
            ).fetchone()
        depth, age = row if row else (None, None)
        OUTBOX_DEPTH.set(float(depth or 0))
        OUTBOX_OLDEST.set(float(age or 0))


async def publish_all(settings: Settings, pool: AsyncConnectionPool[Any]) -> int:
    """Publish the whole outbox once, as the leader does, without taking leadership.

    For tests and benchmarks; return how many events were published.
    """
    await ensure_topic(settings)
    producer = make_producer(settings)
    await producer.start()
    relay = OutboxRelay(settings, pool)
    await relay._load_partitions()
    total = 0
    try:
        while published := await relay.publish_once(producer):
            total += published
    finally:
        await producer.stop()
    return total


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
