"""Run one projection from Kafka: consume, heal gaps, apply, park poison, commit.

- One consumer group per projection (``tally.<name>``), offsets committed by hand after the
  batch was applied: a crash replays the batch, and the projection skips what it has.
- Each message says which position the relay published before it on that partition (``prev``).
  If that is above the last position seen here, messages were lost (a broker lost its data, a
  topic was recreated): the missing range is read from the event store before going on.
- An event that cannot be decoded or applied is parked with the later events of its comment;
  an outage of the projection's store is retried until it comes back, never skipped.
- A watchdog covers silence: when nothing has arrived for ``STALL_SECONDS`` while the event
  store's head is past what this runner's partitions have seen (a relay outage, or a broker that
  lost its data and left this consumer waiting at offsets beyond the recreated topic), it heals
  those partitions from the store and rewinds partitions whose fetch position is past their end.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import msgspec
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.errors import KafkaError
from opentelemetry.trace import Span, SpanKind
from prometheus_client import Counter, Gauge
from psycopg_pool import AsyncConnectionPool

from event_store.partitioning import partition_for
from event_store.postgres import PostgresEventStore
from event_store.relay import ensure_topic
from projectors import parking
from projectors.base import CannotApply, Projection
from projectors.fence import SwitchFence
from schemas.codec import UnknownEventError, decode_envelope
from schemas.envelope import Envelope
from tally import tracing
from tally.settings import Settings

log = structlog.get_logger(__name__)

APPLIED = Counter("tally_projection_applied_total", "Events applied", ["projection"])
PARKED = Counter("tally_projection_parked_total", "Events parked (DLQ)", ["projection"])
GAPS = Counter("tally_projection_gaps_healed_total", "Gaps healed from the store", ["projection"])
ERRORS = Counter("tally_projection_store_errors_total", "Failed applies, retried", ["projection"])
CHECKPOINT = Gauge("tally_projection_checkpoint_position", "Last position applied", ["projection"])
LAG_EVENTS = Gauge("tally_projection_lag_events", "Head position minus checkpoint", ["projection"])
LAG_SECONDS = Gauge(
    "tally_projection_lag_seconds", "Now minus the time of the last applied event", ["projection"]
)


STALL_SECONDS = 5.0


class Stopping(Exception):
    """The runner was asked to stop while waiting for its store."""


class ProjectorRunner:
    """Feeds one projection from the events topic."""

    def __init__(
        self, projection: Projection, settings: Settings, pool: AsyncConnectionPool[Any]
    ) -> None:
        self.projection = projection
        self._settings = settings
        self._pool = pool
        self._store = PostgresEventStore(pool)
        self._name = projection.name
        self._seen: dict[int, int] = {}
        self._parked: set[str] = set()
        self._stop = asyncio.Event()
        self._dlq: AIOKafkaProducer | None = None
        self._checkpoint = 0
        self._last_time = 0.0
        self._lag_checked = 0.0
        self._heard_at = time.monotonic()
        self._partitions = 0
        self._fence = SwitchFence(settings.pg_dsn, projection.name)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; commit only what was applied."""
        self._stop = stop
        with contextlib.suppress(Stopping):
            await self._consume(stop)

    async def _consume(self, stop: asyncio.Event) -> None:
        await self._until_ready(self.projection.setup)
        await self._until_ready(lambda: ensure_topic(self._settings))
        self._seen = await self._load_seen()
        # Lag counts from what was applied before a restart, not from position 0.
        self._checkpoint = max(self._seen.values(), default=0)
        CHECKPOINT.labels(self._name).set(self._checkpoint)
        self._parked = await parking.parked_comments(self._pool, self._name)
        log.info("projector_started", projection=self._name)
        try:
            while not stop.is_set():
                consumer = self._consumer()
                await self._until_ready(consumer.start)
                try:
                    await self._poll(consumer, stop)
                except (KafkaError, AssertionError) as exc:
                    # The Kafka client gave up in a state it cannot leave (aiokafka reports
                    # some, like a partition revoked mid-call, as AssertionError): start over.
                    log.warning("replacing_consumer", projection=self._name, error=repr(exc))
                    await asyncio.sleep(1)
                finally:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(consumer.stop(), 10)
        finally:
            if self._dlq is not None:
                await self._dlq.stop()
            await self._fence.close()
            log.info("projector_stopped", projection=self._name, checkpoint=self._checkpoint)

    def _consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            self._settings.kafka_topic,
            bootstrap_servers=self._settings.kafka_bootstrap,
            group_id=f"{self._settings.kafka_group_prefix}.{self._name}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self._settings.projector_batch_size,
            metadata_max_age_ms=5000,
            fetch_max_wait_ms=50,  # a new score should show in milliseconds, not half a second
        )

    async def _poll(self, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> None:
        """Consume until stopped, or until this consumer looks stuck (then it is replaced)."""
        stalls = 0
        while not stop.is_set():
            try:
                batches = await asyncio.wait_for(
                    consumer.getmany(
                        timeout_ms=200, max_records=self._settings.projector_batch_size
                    ),
                    STALL_SECONDS,
                )
            except TimeoutError:  # a consumer stuck rejoining a group the broker forgot
                batches = {}
            # Without metadata (a stuck consumer), the count the topic is created with.
            known = consumer.partitions_for_topic(self._settings.kafka_topic)
            partitions = len(known) if known else self._settings.kafka_partitions
            self._follow_partition_count(partitions)
            if batches:
                stalls = 0
                self._heard_at = time.monotonic()
                for tp, messages in batches.items():
                    await self._handle(tp.partition, messages, partitions)
                await self._save_seen()
                try:
                    await consumer.commit()
                except KafkaError as exc:  # replayed later, skipped by position
                    log.warning("offset_commit_failed", error=str(exc))
            elif time.monotonic() - self._heard_at > STALL_SECONDS:
                self._heard_at = time.monotonic()
                if await self._watchdog(consumer, partitions):
                    stalls += 1
                    if stalls >= 2:
                        log.warning("replacing_stuck_consumer", projection=self._name)
                        return
            await self._update_lag()

    async def _handle(
        self, partition: int, messages: list[ConsumerRecord[Any, Any]], n: int
    ) -> None:
        last = self._seen.get(partition, 0)
        ready: list[Envelope] = []
        # Traced messages' spans end once their batch is applied.
        with tracing.spans_ended() as spans:
            for message in messages:
                headers = dict(message.headers or ())
                position = int(headers.get("position", b"0"))
                prev = int(headers.get("prev", b"0"))
                if position and position <= last:
                    continue  # redelivered: applied already
                spans.append(self._span(headers.get("traceparent"), partition, position))
                if prev > last:
                    await self._flush(ready)
                    ready = []
                    await self._heal(partition, n, last, prev)
                try:
                    ready.append(decode_envelope(message.value))
                except UnknownEventError as exc:
                    await self._flush(ready)  # what came before it is applied first
                    ready = []
                    key = (message.key or b"").decode(errors="replace")
                    correlation = headers.get("correlation_id", b"").decode(errors="replace")
                    await self._park([(position, key, str(exc))], [correlation])
                last = max(last, position)
            await self._flush(ready)
        self._seen[partition] = last

    def _span(self, traceparent: bytes | None, partition: int, position: int) -> Span | None:
        return tracing.start_message_span(
            traceparent,
            f"apply {self._name}",
            SpanKind.CONSUMER,
            self._settings.kafka_topic,
            partition,
            position,
            **{"tally.projection": self._name},
        )

    def _follow_partition_count(self, partitions: int) -> None:
        """A topic recreated with another partition count maps comments anew.

        What each partition had seen belongs to the old mapping, so it is lowered to the least
        any partition had seen: the next gap check then heals everything since (idempotent).
        """
        if self._partitions and partitions != self._partitions and self._seen:
            floor = min(self._seen.values())
            log.warning(
                "partition_count_changed",
                projection=self._name,
                before=self._partitions,
                after=partitions,
                healing_from=floor,
            )
            self._seen = dict.fromkeys(range(partitions), floor)
        self._partitions = partitions

    async def _watchdog(self, consumer: AIOKafkaConsumer, partitions: int) -> bool:
        """Silence with events waiting in the store: heal from it and rewind stuck partitions.

        Returns whether anything was waiting. Without an assignment (the consumer is stuck
        rejoining), every partition is healed: idempotent, so at worst duplicate work.
        """
        assigned = consumer.assignment()
        mine = sorted(tp.partition for tp in assigned) or list(range(partitions))
        head = await self._store.head()
        waiting = [p for p in mine if head > self._seen.get(p, 0)]
        for partition in waiting:
            await self._heal(partition, partitions, self._seen.get(partition, 0), head)
            self._seen[partition] = head
        for tp in assigned:
            with contextlib.suppress(KafkaError, AssertionError):  # revoked meanwhile
                end = consumer.highwater(tp)
                if end is not None and await consumer.position(tp) > end:
                    log.warning(
                        "rewinding_partition", projection=self._name, partition=tp.partition
                    )
                    consumer.seek_to_beginning(tp)
        if waiting:
            await self._save_seen()
        return bool(waiting)

    async def _heal(self, partition: int, partitions: int, after: int, upto: int) -> None:
        """Apply this partition's events in (after, upto] straight from the event store.

        Counted and logged only if the range held any: after a quiet spell the watchdog checks
        every partition against the global head, and most have nothing missing.
        """
        healed = 0
        async for batch in self._store.read_all(after=after, until=upto, batch_size=5000):
            mine = [e for e in batch if partition_for(e.event.comment_id, partitions) == partition]
            if mine and not healed:
                GAPS.labels(self._name).inc()
                log.warning(
                    "gap_healing",
                    projection=self._name,
                    partition=partition,
                    after=after,
                    upto=upto,
                )
            healed += len(mine)
            await self._flush(mine)

    async def _flush(self, envelopes: Sequence[Envelope]) -> None:
        """Apply ``envelopes``; park held-back and poison events, keeping per-comment order."""
        if not envelopes:
            return
        held = [e for e in envelopes if str(e.event.comment_id) in self._parked]
        if held:
            await self._park(
                [(e.position, str(e.event.comment_id), "held behind a parked event") for e in held],
                [e.correlation_id for e in held],
            )
        ready = [e for e in envelopes if str(e.event.comment_id) not in self._parked]
        try:
            await self._apply(ready)
        except CannotApply:
            await self._apply_one_comment_at_a_time(ready)
        self._applied(ready)

    async def _apply_one_comment_at_a_time(self, envelopes: Sequence[Envelope]) -> None:
        by_comment: dict[str, list[Envelope]] = defaultdict(list)
        for envelope in envelopes:
            by_comment[str(envelope.event.comment_id)].append(envelope)
        for comment_id, events in by_comment.items():
            for index, envelope in enumerate(events):
                try:
                    await self._apply([envelope])
                except CannotApply as exc:
                    rest = events[index + 1 :]
                    await self._park(
                        [(envelope.position, comment_id, exc.reason)]
                        + [(e.position, comment_id, "held behind a parked event") for e in rest],
                        [e.correlation_id for e in events[index:]],
                    )
                    break

    async def _apply(self, envelopes: Sequence[Envelope]) -> None:
        """Apply under the switch fence, retrying while the projection's store is down."""
        delay = 0.2
        while True:
            try:
                async with self._fence.shared():
                    await self.projection.apply(envelopes)
                return
            except CannotApply:
                raise
            except Exception as exc:
                ERRORS.labels(self._name).inc()
                log.warning("projection_store_error", projection=self._name, error=str(exc))
                if self._stop.is_set():
                    raise Stopping from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _park(
        self, rows: list[tuple[int, str, str]], correlation_ids: Sequence[str | None] = ()
    ) -> None:
        await parking.park(self._pool, self._name, rows)
        self._parked.update(comment for _, comment, _ in rows)
        PARKED.labels(self._name).inc(len(rows))
        log.error(
            "events_parked",
            projection=self._name,
            positions=[r[0] for r in rows],
            error=rows[0][2],
            # The requests that caused them: the id from X-Request-ID, carried in the event.
            correlation_ids=sorted({c for c in correlation_ids if c}),
        )
        await self._copy_to_dlq(rows)

    async def _copy_to_dlq(self, rows: list[tuple[int, str, str]]) -> None:
        try:
            if self._dlq is None:
                self._dlq = AIOKafkaProducer(bootstrap_servers=self._settings.kafka_bootstrap)
                await self._dlq.start()
            for position, comment_id, error in rows:
                body = {
                    "projection": self._name,
                    "position": position,
                    "comment_id": comment_id,
                    "error": error,
                }
                await self._dlq.send(
                    self._settings.kafka_dlq_topic,
                    msgspec.json.encode(body),
                    key=comment_id.encode(),
                )
        except KafkaError as exc:  # the parked_events table is the record; this is a copy
            log.warning("dlq_copy_failed", error=str(exc))

    def _applied(self, envelopes: Sequence[Envelope]) -> None:
        if not envelopes:
            return
        APPLIED.labels(self._name).inc(len(envelopes))
        self._checkpoint = max(self._checkpoint, envelopes[-1].position)
        self._last_time = envelopes[-1].occurred_at.timestamp()
        CHECKPOINT.labels(self._name).set(self._checkpoint)

    async def _update_lag(self) -> None:
        if time.monotonic() - self._lag_checked < 2:
            return
        self._lag_checked = time.monotonic()
        with contextlib.suppress(Exception):
            head = await self._store.head()
            lag = max(0, head - self._checkpoint)
            LAG_EVENTS.labels(self._name).set(lag)
            LAG_SECONDS.labels(self._name).set(
                max(0.0, time.time() - self._last_time) if lag and self._last_time else 0.0
            )

    async def _load_seen(self) -> dict[int, int]:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT partition, last_position FROM projection_partitions WHERE projection = %s",
                (self._name,),
            )
            return {int(p): int(pos) for p, pos in await cur.fetchall()}

    async def _save_seen(self) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                "INSERT INTO projection_partitions (projection, partition, last_position)"
                " SELECT %s, * FROM unnest(%s::int[], %s::int8[])"
                " ON CONFLICT (projection, partition)"
                " DO UPDATE SET last_position = excluded.last_position",
                (self._name, list(self._seen), list(self._seen.values())),
            )

    async def _until_ready(self, step: Any) -> None:
        delay = 0.5
        while True:
            try:
                await step()
                return
            except Exception as exc:
                log.warning("projector_waiting", projection=self._name, error=str(exc))
                if self._stop.is_set():
                    raise Stopping from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
