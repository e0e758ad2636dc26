"""The outbox relay: publish recorded events to Kafka in position order, then forget them.

One relay leads at a time (``event_store.lease``); the others stand by and take over within a
lease of the leader stopping. The leader reads outbox rows in position order, publishes each
to ``tally.events`` keyed by ``comment_id`` (so a comment's events stay in one partition, in
order), waits for Kafka's acks, and only then deletes the rows, fenced by its lease.

Each message carries the partition chain (``event_store.messaging``), and the leader sends a
watermark to every partition after progress (at most every ``watermark_interval``) and once a
second while idle, so projectors can tell lost messages from duplicates and know how far a
quiet partition is complete. Delivery is at least once; projections are idempotent by position.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import msgspec
import psycopg
import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from opentelemetry.trace import SpanKind
from prometheus_client import Counter, Gauge
from psycopg_pool import AsyncConnectionPool

from event_store import outbox
from event_store.lease import RELAY_LOCK, RelayLease
from event_store.messaging import (
    WATERMARK,
    KafkaAccess,
    MessageHeaders,
    close_client,
    encode_headers,
    ensure_topic,
    make_producer,
)
from event_store.outbox import Chain, LeaseLost, OutboxRow
from event_store.partitioning import partition_for
from kernel import tracing

log = structlog.get_logger(__name__)

PUBLISHED = Counter("tally_relay_published_total", "Events published to Kafka and acked")
PUBLISH_ERRORS = Counter("tally_relay_publish_errors_total", "Relay batches that failed")
OUTBOX_DEPTH = Gauge("tally_outbox_depth", "Events waiting in the outbox")
OUTBOX_OLDEST = Gauge("tally_outbox_oldest_age_seconds", "Age of the oldest outbox event")
LEADER = Gauge("tally_relay_leader", "1 while this relay is the leader")
EPOCH = Gauge("tally_relay_epoch", "The partition-mapping epoch the relay publishes under")
TAKEOVERS = Counter("tally_relay_leadership_lost_total", "Times this relay lost its lease")

IDLE_WATERMARK_SECONDS = 1.0
FAILURES_BEFORE_NEW_PRODUCER = 3


class RelayConfig(msgspec.Struct, frozen=True, kw_only=True):
    """What the relay needs to know."""

    kafka: KafkaAccess
    topic: str
    partitions: int
    idempotent_producer: bool = True
    batch_size: int = 2000
    poll_interval_ms: float = 20.0
    lease_seconds: float = 10.0
    watermark_interval_ms: float = 200.0
    kafka_timeout_ms: int = 10_000


class OutboxRelay:
    """Publishes the outbox while it holds the lease."""

    def __init__(
        self, config: RelayConfig, pool: AsyncConnectionPool[Any], lease: RelayLease | None = None
    ) -> None:
        self._config = config
        self._pool = pool
        self.lease = lease or RelayLease(config.lease_seconds)
        self.chain = Chain()
        self._dsn = str(pool.conninfo)
        self._lock_conn: psycopg.AsyncConnection[Any] | None = None
        self._locked = False
        self._watermarked_at = 0.0
        self._watermarked = -1
        self._deleted_upto = 0  # the outbox holds nothing at or below it (see fetch_batch)

    async def run(self, stop: asyncio.Event) -> None:
        """Stand by until the lease is free, then publish; until ``stop`` is set."""
        announced = False
        while not stop.is_set():
            try:
                locked = await self._session_lock()
                async with self._pool.connection() as conn:
                    leading = await self.lease.acquire(conn, force=locked)
            except psycopg.Error as exc:
                log.warning("relay_db_unavailable", error=str(exc))
                await _sleep(stop, 1.0)
                continue
            if not leading:
                if not announced:
                    log.info("relay_standby", holder=self.lease.holder)
                    announced = True
                await _sleep(stop, 1.0)
                continue
            announced = False
            LEADER.set(1)
            log.info("relay_leader", holder=self.lease.holder, token=self.lease.token)
            try:
                await self._lead(stop)
            finally:
                LEADER.set(0)
            await _sleep(stop, 0.2)  # leading ended on an error: not a hot loop
        with contextlib.suppress(psycopg.Error):
            async with self._pool.connection() as conn:
                await self.lease.release(conn)
        if self._lock_conn is not None:
            await self._lock_conn.close()

    async def _session_lock(self) -> bool:
        """Hold the advisory lock on a connection of its own; True when just taken.

        Taking it means no other relay's session holds it: the leader died, so its lease can
        be taken before it expires.
        """
        if self._lock_conn is not None and not self._lock_conn.closed:
            if not self._lock_conn.broken and self._locked:
                return False
            await self._lock_conn.close()
        if self._lock_conn is None or self._lock_conn.closed:
            self._lock_conn = await psycopg.AsyncConnection.connect(
                self._dsn, autocommit=True, connect_timeout=3
            )
            self._locked = False
        row = await (
            await self._lock_conn.execute("SELECT pg_try_advisory_lock(%s)", (RELAY_LOCK,))
        ).fetchone()
        self._locked = bool(row and row[0])
        return self._locked

    async def _lead(self, stop: asyncio.Event) -> None:
        """Publish until stopped or the lease is lost; Kafka errors are retried here."""
        config = self._config
        producer = make_producer(config.kafka, config.idempotent_producer, config.kafka_timeout_ms)
        self._deleted_upto = 0  # another leader may have been at work: start from the oldest
        try:
            await self._bounded(producer.start())
            # Before the producer asks for the topic's metadata: a broker that creates topics
            # on demand would otherwise create it with its own default partition count.
            await self._bounded(ensure_topic(config.kafka, config.topic, config.partitions))
            await self._load_chain()
            checked, failures = 0.0, 0
            while not stop.is_set():
                if self.lease.should_renew():
                    async with self._pool.connection() as conn:
                        await outbox.renew(conn, self.lease)
                if not self.lease.may_act():
                    raise LeaseLost("the lease ran out before it could be renewed")
                if time.monotonic() - checked > 1.0:
                    await self._update_gauges()
                    checked = time.monotonic()
                try:
                    published = await self.publish_once(producer)
                    await self._watermarks(producer)
                    failures = 0
                except (KafkaError, TimeoutError, AssertionError) as exc:
                    # aiokafka reports some states it cannot leave as AssertionError
                    # ("Unrecognized partition" when the topic changed under it).
                    PUBLISH_ERRORS.inc()
                    failures += 1
                    log.warning("relay_publish_failed", error=repr(exc), in_a_row=failures)
                    if failures >= FAILURES_BEFORE_NEW_PRODUCER:
                        # A producer can stay stuck on a broker that came back different (one
                        # that lost its log knows neither its producer id nor its sequences).
                        log.warning("relay_new_producer", after_failures=failures)
                        return
                    await _sleep(stop, 1.0)
                    with contextlib.suppress(KafkaError, OSError, TimeoutError):
                        await self._bounded(
                            ensure_topic(config.kafka, config.topic, config.partitions)
                        )
                    await self._load_chain()
                    continue
                if not published:
                    await _sleep(stop, config.poll_interval_ms / 1000)
        except LeaseLost as exc:
            TAKEOVERS.inc()
            log.warning("relay_lease_lost", error=str(exc))
        except (psycopg.Error, KafkaError, TimeoutError, AssertionError) as exc:
            log.error("relay_stepping_down", error=repr(exc))
        finally:
            await close_client(producer)

    async def publish_once(self, producer: AIOKafkaProducer) -> int:
        """Publish one batch of outbox rows and delete them once acked; return how many."""
        config = self._config
        async with self._pool.connection() as conn:
            rows = await outbox.fetch_batch(conn, config.batch_size, self._deleted_upto)
            if not rows:
                return 0
            partitions = await self._follow_topic(conn, producer)
            last = dict(self.chain.last)

            async def send_all() -> None:
                sends = []
                with tracing.spans_ended() as spans:
                    for row in rows:
                        partition = partition_for(row.key, partitions)
                        span = tracing.start_message_span(
                            row.traceparent,
                            f"publish {config.topic}",
                            SpanKind.PRODUCER,
                            config.topic,
                            partition,
                            row.position,
                        )
                        spans.append(span)
                        headers = self._headers(row, last.get(partition, 0), span)
                        last[partition] = row.position
                        # send() itself waits while the producer's buffer for a partition is
                        # full, as long as a request is unanswered: bounded with the acks.
                        sends.append(
                            await producer.send(
                                config.topic,
                                row.envelope,
                                key=row.key.encode(),
                                partition=partition,
                                headers=encode_headers(headers),
                            )
                        )
                    await asyncio.gather(*sends)

            await self._bounded(send_all())
            changed = {p: pos for p, pos in last.items() if self.chain.last.get(p) != pos}
            await outbox.commit_batch(
                conn, self.lease, rows[0].position, rows[-1].position, changed
            )
            self.chain.last = last
            self._deleted_upto = rows[-1].position
        PUBLISHED.inc(len(rows))
        return len(rows)

    def _headers(self, row: OutboxRow, prev: int, span: Any) -> MessageHeaders:
        # Tracing off here: pass the stored context on, the chain stays linked.
        sent_as = row.traceparent if span is None else tracing.traceparent_of(span)
        return MessageHeaders(
            position=row.position,
            prev=prev,
            epoch=self.chain.epoch,
            partitions=self.chain.partitions,
            type=row.type,
            traceparent=sent_as,
            correlation_id=row.correlation_id,
        )

    async def _watermarks(self, producer: AIOKafkaProducer) -> None:
        """Tell every partition how far the relay has published, when due."""
        published = self.chain.published
        since = time.monotonic() - self._watermarked_at
        moved = published > self._watermarked
        if not self.chain.partitions or (
            since < IDLE_WATERMARK_SECONDS
            and not (moved and since >= self._config.watermark_interval_ms / 1000)
        ):
            return
        # An idle relay must notice a re-created topic too, or it would send watermarks to
        # partitions that no longer exist, forever.
        partitions = await self._follow_topic(None, producer)

        async def send_all() -> None:
            sends = [
                await producer.send(
                    self._config.topic,
                    b"",
                    partition=partition,
                    headers=encode_headers(
                        MessageHeaders(
                            kind=WATERMARK,
                            position=published,
                            prev=self.chain.last.get(partition, 0),
                            epoch=self.chain.epoch,
                            partitions=self.chain.partitions,
                        )
                    ),
                )
                for partition in range(partitions)
            ]
            await asyncio.gather(*sends)

        await self._bounded(send_all())
        self._watermarked_at = time.monotonic()
        self._watermarked = published

    async def _follow_topic(
        self, conn: psycopg.AsyncConnection[Any] | None, producer: AIOKafkaProducer
    ) -> int:
        """The topic's partition count now; a count the chain does not know starts an epoch
        (on ``conn``, or on a connection taken only then: the count comes from cached metadata).

        A broker that lost its data may have had the topic re-created with another count (its
        default, by a client that creates topics on demand) before the relay could create it
        with the configured one.
        """
        partitions = len(await self._bounded(producer.partitions_for(self._config.topic)))
        if partitions == self.chain.partitions:
            return partitions
        if conn is not None:
            await self._new_epoch(conn, partitions)
        else:
            async with self._pool.connection() as own:
                await self._new_epoch(own, partitions)
        return partitions

    async def _load_chain(self) -> None:
        async with self._pool.connection() as conn:
            self.chain = await outbox.load_chain(conn)
        EPOCH.set(self.chain.epoch)

    async def _new_epoch(self, conn: psycopg.AsyncConnection[Any], partitions: int) -> None:
        if partitions != self._config.partitions:
            log.error(
                "topic_partition_count_differs",
                topic=self._config.topic,
                partitions=partitions,
                configured=self._config.partitions,
            )
        before = self.chain
        self.chain = await outbox.start_epoch(conn, self.lease, partitions)
        EPOCH.set(self.chain.epoch)
        log.warning(
            "relay_new_epoch",
            epoch=self.chain.epoch,
            partitions=partitions,
            previous_partitions=before.partitions,
            chain_restarts_at=self.chain.published,
        )

    async def _bounded(self, step: Any) -> Any:
        """Await a Kafka call for at most the Kafka timeout (plus slack for retries), and never
        so long that the lease runs out meanwhile: a leader waiting on brokers that are away
        must still renew it (the batch fails and is published again)."""
        config = self._config
        seconds = min(config.kafka_timeout_ms / 1000 * 3, config.lease_seconds / 2)
        return await asyncio.wait_for(step, seconds)

    async def _update_gauges(self) -> None:
        async with self._pool.connection() as conn:
            depth, age = await outbox.backlog(conn)
        OUTBOX_DEPTH.set(depth)
        OUTBOX_OLDEST.set(age)


async def publish_all(config: RelayConfig, pool: AsyncConnectionPool[Any]) -> int:
    """Publish the whole outbox once, as a leader does (taking the lease for it).

    For tests and benchmarks; return how many events were published.
    """
    await ensure_topic(config.kafka, config.topic, config.partitions)
    producer = make_producer(config.kafka, config.idempotent_producer, config.kafka_timeout_ms)
    await producer.start()
    relay = OutboxRelay(config, pool)
    total = 0
    try:
        async with pool.connection() as conn:
            if not await relay.lease.acquire(conn):
                raise LeaseLost("another relay leads; stop it before publishing by hand")
        await relay._load_chain()
        while published := await relay.publish_once(producer):
            total += published
        relay._watermarked_at = 0.0
        await relay._watermarks(producer)
    finally:
        await producer.stop()
        async with pool.connection() as conn:
            await relay.lease.release(conn)
    return total


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
