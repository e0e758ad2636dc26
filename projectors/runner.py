"""Run one projection from Kafka: consume, heal gaps from the store, apply, commit.

- One consumer group per projection (``tally.<name>``), offsets committed by hand after the
  batch was applied and the partition tracker saved: a crash replays the batch, and the
  projection skips what it has.
- The tracker (``projectors.partition_tracker``) reads the relay's headers: duplicates are
  skipped, lost messages are healed from the event store before going on, a new partition
  mapping is followed, and watermarks keep the low-water mark moving on quiet partitions.
- Delivery (``projectors.delivery``) retries outages and parks only poison.
- A watchdog covers a standstill: when the low-water mark has not moved for ``STALL_SECONDS``
  while the event store's head is past it (the relay is down or stuck on a partition, or a
  broker lost its data and left this consumer waiting at offsets beyond the recreated topic),
  it heals the partitions behind from the store and rewinds partitions whose fetch position is
  past their end; a consumer that also delivers nothing is replaced.
- Every ``CHECK_SECONDS``: the DLQ table is followed and the read model's integrity checked; a
  store that lost its data is handed to ``on_lost`` (a rebuild).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from opentelemetry.trace import Span, SpanKind
from prometheus_client import Counter, Gauge
from psycopg_pool import AsyncConnectionPool

from event_store.messaging import (
    BadHeaders,
    KafkaAccess,
    close_client,
    decode_headers,
    ensure_topic,
    make_consumer,
)
from event_store.partitioning import partition_for
from event_store.port import EventStore
from kernel import tracing
from projectors import positions
from projectors.base import Projection
from projectors.delivery import Delivery, ProjectorFailed, Stopping
from projectors.fence import SwitchFence
from projectors.parking import DeadLetters, Parked
from projectors.partition_tracker import Heal, PartitionTracker
from projectors.store_errors import classify
from schemas.codec import UnknownEventError, decode_envelope
from schemas.envelope import Envelope

log = structlog.get_logger(__name__)

GAPS = Counter(
    "tally_projection_gaps_healed_total",
    "Ranges healed from the store, by cause (gap: lost in Kafka; standstill: the watchdog's)",
    ["projection", "cause"],
)
LOW_WATER = Gauge(
    "tally_projection_low_water_mark",
    "Every event at or below this position is applied (across all partitions)",
    ["projection"],
)
LAG_EVENTS = Gauge(
    "tally_projection_lag_events", "Head position minus the low-water mark", ["projection"]
)
LAG_SECONDS = Gauge(
    "tally_projection_lag_seconds", "Now minus the time of the last applied event", ["projection"]
)
WATCHDOG = Counter(
    "tally_projection_watchdog_checks_total",
    "Standstills of the low-water mark the watchdog looked into",
    ["projection"],
)
READY = Gauge(
    "tally_projector_ready",
    "1 while the projection has caught up with the log and its consumer reads every partition"
    " it was assigned",
    ["projection"],
)
CONSUMING = Gauge(
    "tally_projector_partitions_consuming",
    "Partitions of the events topic this process's consumer holds and has fetched from",
    ["projection"],
)
TOPIC_PARTITIONS = Gauge(
    "tally_projector_topic_partitions", "Partitions the events topic has", ["projection"]
)
FOREIGN = Counter(
    "tally_projection_foreign_messages_total",
    "Messages on the events topic without the relay's headers (skipped)",
    ["projection"],
)

STALL_SECONDS = 5.0
START_SECONDS = 30.0  # a consumer that cannot join in this long is replaced
CHECK_SECONDS = 2.0
# Messages decoded between two yields to the event loop, so that the batch in flight's round
# trips (fence, generation, script, positions, offsets: about eight) are answered within half a
# millisecond instead of after the whole decode; 200 made the projector 20 % slower than 50.
_YIELD_EVERY = 50
# Records taken from the consumer per call: aiokafka parses what ``getmany`` returns without
# yielding, about 3.5 µs a record, so a whole batch at once held the in-flight batch's replies
# back for about 7 ms.
_FETCH_SLICE = 500


@dataclass(frozen=True)
class _Batch:
    """One consumed batch, admitted: what to apply, then what to save and commit."""

    ready: list[Envelope]
    spans: list[Span | None]  # ended once the batch is applied
    tracker: PartitionTracker  # as it is once ``ready`` is applied
    offsets: dict[TopicPartition, int]  # the next offset to read, per partition


class RunnerConfig(msgspec.Struct, frozen=True, kw_only=True):
    """What a projector runner needs to know."""

    kafka: KafkaAccess
    topic: str
    dlq_topic: str
    group_prefix: str
    partitions: int
    batch_size: int = 2000
    kafka_timeout_ms: int = 10_000
    instance: str = ""  # a static member's name in each group (empty: anonymous)
    session_timeout_ms: int = 10_000


async def _nothing() -> None:
    return None


async def _ignore(projection: str, low_water: int) -> None:
    return None


class ProjectorRunner:
    """Feeds one projection from the events topic."""

    def __init__(
        self,
        projection: Projection,
        config: RunnerConfig,
        pool: AsyncConnectionPool[Any],
        store: EventStore,
        fence: SwitchFence,
        on_lost: Callable[[], Awaitable[None]] | None = None,
        on_progress: Callable[[str, int], Awaitable[None]] | None = None,
    ) -> None:
        self.projection = projection
        self._config = config
        self._pool = pool
        self._store = store
        self._fence = fence
        self._name = projection.name
        self._on_lost = on_lost or _nothing
        self._on_progress = on_progress or _ignore
        self.tracker = PartitionTracker()
        self._persisted = (0, 0)
        self._stop = asyncio.Event()
        self._dead_letters = DeadLetters(pool, self._name, config.kafka, config.dlq_topic)
        self.delivery = Delivery(
            projection, pool, fence, self._dead_letters, self._stop, self._lost
        )
        self._last_time = 0.0
        self._checked = 0.0
        self._heard_at = time.monotonic()
        self._stalls = 0
        self.ready = asyncio.Event()  # set once caught up and consuming
        self._ready_at = 0
        self._caught_up = False
        self._consuming = False
        # The low-water mark as saved: what was applied for sure (the tracker runs ahead of
        # delivery within a batch).
        self.applied_low_water = 0
        self._applying: asyncio.Task[None] | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; commit only what was applied."""
        self._stop = self.delivery._stop = stop
        try:
            await self._consume(stop)
        except Stopping:
            pass
        finally:
            await self._dead_letters.close()
            await self._fence.close()
            log.info(
                "projector_stopped", projection=self._name, low_water=self.tracker.low_water_mark()
            )

    async def _consume(self, stop: asyncio.Event) -> None:
        config = self._config
        await self._until_ready(self.projection.setup)
        await self._until_ready(lambda: ensure_topic(config.kafka, config.topic, config.partitions))
        await self._load_tracker()
        if not self.tracker.seen:
            # From nothing: what this projection writes from now on is whole.
            await self._until_ready(self.projection.mark_intact)
        await self._until_ready(self.delivery.refresh_parked)
        self._ready_at = await self._until_ready(self._store.head)
        self._show_progress(self._ready_at)
        log.info("projector_started", projection=self._name, low_water=self.applied_low_water)
        while not stop.is_set():
            consumer = make_consumer(
                config.kafka,
                config.topic,
                f"{config.group_prefix}.{self._name}",
                config.batch_size,
                config.kafka_timeout_ms,
                config.instance,
                config.session_timeout_ms,
            )
            try:
                try:
                    await asyncio.wait_for(consumer.start(), START_SECONDS)
                except (KafkaError, OSError, TimeoutError) as exc:
                    # No broker to read from: the log is still there. Heal from it meanwhile.
                    log.warning("consumer_not_started", projection=self._name, error=repr(exc))
                    await self._watchdog(None)
                    await asyncio.sleep(1)
                    continue
                await self._poll(consumer, stop)
            except (KafkaError, AssertionError) as exc:
                # The Kafka client gave up in a state it cannot leave (aiokafka reports some,
                # like a partition revoked mid-call, as AssertionError): start over.
                log.warning("replacing_consumer", projection=self._name, error=repr(exc))
                await asyncio.sleep(1)
            except (Stopping, ProjectorFailed):
                raise
            except Exception as exc:
                if classify(exc) != "transient":
                    raise
                # A store went away mid-batch (a heal's read, saving positions): the tracker
                # may be ahead of what was applied, so start again from what was saved; the
                # uncommitted messages come again.
                log.warning("projector_restarting_batch", projection=self._name, error=repr(exc))
                await asyncio.sleep(1)
                await self._load_tracker()
            finally:
                await close_client(consumer)

    async def _load_tracker(self) -> None:
        """The tracker as last saved: everything it claims was applied."""
        self.tracker = await self._until_ready(lambda: positions.load(self._pool, self._name))
        self._persisted = (self.tracker.epoch, self.tracker.partitions)
        self.applied_low_water = self.tracker.low_water_mark()

    async def _poll(self, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> None:
        """Consume until stopped, or until this consumer looks stuck (then it is replaced).

        One batch is applied (and saved and committed) in the background while the next is
        fetched and decoded: the Python work of one overlaps Redis's or Elasticsearch's of the
        other. At most one batch is in flight, and anything that heals, parks or checks waits
        for it first (``_drain``).

        The watchdog looks at progress, not traffic: a relay stuck retrying one partition still
        sends duplicates of the others, yet the low-water mark stands still.
        """
        self._stalls = 0
        progress_at, mark = time.monotonic(), self.tracker.low_water_mark()
        try:
            while not stop.is_set():
                try:
                    batches = await asyncio.wait_for(self._fetch(consumer), STALL_SECONDS)
                except TimeoutError:  # a consumer stuck rejoining a group the broker forgot
                    batches = {}
                now = time.monotonic()
                self._follow_assignment(consumer)
                if batches:
                    self._heard_at = now
                    batch = await self._admit(batches)
                    await self._drain()
                    self._applying = asyncio.create_task(self._apply(batch, consumer))
                    await asyncio.sleep(0)  # let it send its first request before we decode
                elif self._applying is not None and self._applying.done():
                    await self._drain()  # raise what it raised without waiting for traffic
                if self.tracker.low_water_mark() > mark:
                    progress_at, mark, self._stalls = now, self.tracker.low_water_mark(), 0
                elif now - progress_at > STALL_SECONDS:
                    progress_at = now
                    silent = now - self._heard_at > STALL_SECONDS
                    if await self._watchdog(consumer) and silent:
                        self._stalls += 1
                        if self._stalls >= 2:
                            log.warning("replacing_stuck_consumer", projection=self._name)
                            return
                    mark = self.tracker.low_water_mark()
                if now - self._checked > CHECK_SECONDS:
                    self._checked = now
                    await self._checks()
        finally:
            self._follow_assignment(None)
            await self._drain()

    def _follow_assignment(self, consumer: AIOKafkaConsumer | None) -> None:
        """Note whether the consumer holds partitions and has fetched from each of them (a
        fetch answer carries the partition's high watermark): only then can a vote written now
        show without waiting for a group to form. ``None``: no consumer any more."""
        assigned = consumer.assignment() if consumer is not None else set()
        fetched = [tp for tp in assigned if consumer and consumer.highwater(tp) is not None]
        topic = consumer.partitions_for_topic(self._config.topic) if consumer is not None else None
        CONSUMING.labels(self._name).set(len(fetched))
        TOPIC_PARTITIONS.labels(self._name).set(len(topic or ()))
        consuming = bool(assigned) and len(fetched) == len(assigned)
        if consuming != self._consuming:
            self._consuming = consuming
            self._show_readiness()

    async def _fetch(
        self, consumer: AIOKafkaConsumer
    ) -> dict[TopicPartition, list[ConsumerRecord[Any, Any]]]:
        """Up to a batch of records (waiting up to 200 ms for the first), taken in slices with a
        yield between them, in each partition's order."""
        size = self._config.batch_size
        batches: dict[TopicPartition, list[ConsumerRecord[Any, Any]]] = await consumer.getmany(
            timeout_ms=200, max_records=min(size, _FETCH_SLICE)
        )
        taken = sum(map(len, batches.values()))
        while 0 < taken < size:
            await asyncio.sleep(0)  # the batch in flight's replies
            more = await consumer.getmany(timeout_ms=0, max_records=min(size - taken, _FETCH_SLICE))
            if not more:
                break
            for tp, records in more.items():
                batches.setdefault(tp, []).extend(records)
            taken += sum(map(len, more.values()))
        return batches

    async def _drain(self) -> None:
        """Wait for the batch in flight (applied, saved, committed); raise what it raised."""
        task, self._applying = self._applying, None
        if task is not None:
            await task

    async def _admit(self, batches: dict[TopicPartition, list[ConsumerRecord[Any, Any]]]) -> _Batch:
        """Decode and admit every message; heal and park in order, and return what is left to
        apply with the tracker as it will be once that is applied.

        The tracker runs ahead of what was applied; its snapshot in the batch is what gets saved.
        """
        ready: list[Envelope] = []
        spans: list[Span | None] = []
        offsets: dict[TopicPartition, int] = {}
        traced = tracing.tracer() is not None
        try:
            for tp, messages in batches.items():
                partition = tp.partition
                offsets[tp] = messages[-1].offset + 1
                for index, message in enumerate(messages, 1):
                    if not index % _YIELD_EVERY:
                        await asyncio.sleep(0)  # the batch in flight's round trips go on
                    try:
                        headers = decode_headers(message.headers)
                    except BadHeaders as exc:
                        FOREIGN.labels(self._name).inc()
                        log.error("foreign_message", projection=self._name, error=str(exc))
                        continue
                    admission = self.tracker.admit(partition, headers)
                    if admission.new_epoch:
                        log.warning(
                            "partition_mapping_changed",
                            projection=self._name,
                            epoch=self.tracker.epoch,
                            partitions=self.tracker.partitions,
                            healing_from=self.tracker.low_water_mark(),
                        )
                    if admission.heal is not None:
                        await self._deliver_now(ready)  # what came before is applied first
                        ready = []
                        await self.heal(admission.heal)
                    if admission.apply:
                        if traced:
                            spans.append(
                                self._span(headers.traceparent, partition, headers.position)
                            )
                        try:
                            ready.append(decode_envelope(message.value))
                        except UnknownEventError as exc:
                            await self._deliver_now(ready)
                            ready = []
                            key = (message.key or b"").decode(errors="replace")
                            await self.delivery.park(
                                [Parked(headers.position, key, str(exc))], [headers.correlation_id]
                            )
                    if admission.advance:
                        self.tracker.advance(partition, headers.position)
        except BaseException as exc:
            tracing.end_spans(spans, exc)
            raise
        return _Batch(ready, spans, self.tracker.snapshot(), offsets)

    async def _deliver_now(self, ready: list[Envelope]) -> None:
        """Apply ``ready`` at once, after the batch in flight: a heal or a park that follows
        must not overtake either."""
        await self._drain()
        await self.delivery.deliver(ready)

    async def _apply(self, batch: _Batch, consumer: AIOKafkaConsumer) -> None:
        """Apply one admitted batch, save its tracker, then commit its offsets."""
        with tracing.spans_ended() as spans:
            spans += batch.spans
            await self.delivery.deliver(batch.ready)
        if batch.ready:
            self._last_time = batch.ready[-1].occurred_at.timestamp()
        await self._save(batch.tracker)
        # Only partitions still assigned: a revoked one's new owner replays and skips by position.
        owned = consumer.assignment()
        offsets = {tp: offset for tp, offset in batch.offsets.items() if tp in owned}
        try:
            if offsets:
                await asyncio.wait_for(consumer.commit(offsets), STALL_SECONDS)
        except (KafkaError, TimeoutError) as exc:  # replayed later, skipped by position
            log.warning("offset_commit_failed", error=repr(exc))

    def _span(self, traceparent: str | None, partition: int, position: int) -> Span | None:
        return tracing.start_message_span(
            traceparent,
            f"apply {self._name}",
            SpanKind.CONSUMER,
            self._config.topic,
            partition,
            position,
            **{"tally.projection": self._name},
        )

    async def heal(self, heal: Heal) -> None:
        """Apply this partition's events in ``(after, upto]`` straight from the event store.

        Counted and logged only if the range held any: after a quiet spell the watchdog checks
        every partition against the head, and most have nothing missing.
        """
        healed = 0
        async for batch in self._store.read_all(after=heal.after, until=heal.upto, batch_size=5000):
            mine = [
                e
                for e in batch
                if partition_for(e.event.comment_id, heal.partitions) == heal.partition
            ]
            if mine and not healed:
                GAPS.labels(self._name, heal.cause).inc()
                log.warning(
                    "gap_healing",
                    projection=self._name,
                    cause=heal.cause,
                    partition=heal.partition,
                    after=heal.after,
                    upto=heal.upto,
                )
            healed += len(mine)
            await self.delivery.deliver(mine)
        self.tracker.advance(heal.partition, heal.upto)

    async def _watchdog(self, consumer: AIOKafkaConsumer | None) -> bool:
        """The log is ahead and nothing moves: heal from the store and rewind stuck partitions.

        Returns whether anything was waiting. Without an assignment (the consumer is stuck
        rejoining, or there is none) or with one of a topic that has another partition count,
        every partition is healed: idempotent, so at worst duplicate work.
        """
        WATCHDOG.labels(self._name).inc()
        await self._drain()
        if not self.tracker.partitions:
            # No message yet: heal under the configured mapping; a message's epoch corrects it.
            self.tracker.switch(self.tracker.epoch, self._config.partitions)
        assigned = consumer.assignment() if consumer is not None else set()
        # Assigned partitions are the tracker's only while the topic has as many. A topic
        # re-created with another count (a broker that lost its data) is assigned under a mapping
        # no event has switched the tracker to yet: the tracker's other partitions would wait,
        # unhealed, for the first message of the new mapping.
        topic = consumer.partitions_for_topic(self._config.topic) if consumer is not None else None
        same_mapping = topic is not None and len(topic) == self.tracker.partitions
        mine = sorted(tp.partition for tp in assigned) if same_mapping else []
        mine = mine or list(range(self.tracker.partitions))
        head = await self._store.head()
        waiting = [
            p for p in mine if p < self.tracker.partitions and head > self.tracker.seen.get(p, 0)
        ]
        for partition in waiting:
            seen = self.tracker.seen.get(partition, 0)
            await self.heal(Heal(partition, seen, head, self.tracker.partitions, "standstill"))
        for tp in assigned:
            with contextlib.suppress(KafkaError, AssertionError):  # revoked meanwhile
                end = consumer.highwater(tp) if consumer is not None else None
                if consumer is not None and end is not None and await consumer.position(tp) > end:
                    log.warning(
                        "rewinding_partition", projection=self._name, partition=tp.partition
                    )
                    await consumer.seek_to_beginning(tp)
        if waiting:
            await self._save()
        return bool(waiting)

    async def _save(self, tracker: PartitionTracker | None = None) -> None:
        """Save ``tracker`` (by default the live one), once what it claims is applied, and
        publish the low-water mark."""
        saved = tracker or self.tracker
        epoch = (saved.epoch, saved.partitions)
        new_epoch = epoch != self._persisted
        marks: list[int] = []

        async def save() -> None:
            marks.append(await positions.save(self._pool, self._name, saved, new_epoch))

        await self.delivery._retrying(save)
        self._persisted = epoch
        self.applied_low_water = marks[-1]
        try:
            await self._on_progress(self._name, self.applied_low_water)
        except Exception as exc:  # readers fall back to per-comment positions meanwhile
            if classify(exc) == "bug":
                raise
            log.warning("progress_not_published", projection=self._name, error=repr(exc))

    async def _checks(self) -> None:
        """Follow the DLQ, check the read model is whole, update lag gauges (never fatal)."""
        try:
            await self._drain()
            await self.delivery.refresh_parked()
            if not await self.projection.intact():
                await self._lost()
            self._show_progress(await self._store.head())
        except Exception as exc:
            if classify(exc) == "bug":
                raise ProjectorFailed(f"{self._name} checks: {exc!r}") from exc
            log.warning("projector_checks_failed", projection=self._name, error=repr(exc))

    async def _lost(self) -> None:
        await self._on_lost()

    def _show_progress(self, head: int) -> None:
        mark = self.applied_low_water
        lag = max(0, head - mark)
        LOW_WATER.labels(self._name).set(mark)
        LAG_EVENTS.labels(self._name).set(lag)
        LAG_SECONDS.labels(self._name).set(
            max(0.0, time.time() - self._last_time) if lag and self._last_time else 0.0
        )
        if mark >= self._ready_at:  # caught up with the log as it was at start
            self._caught_up = True
        self._show_readiness()

    def _show_readiness(self) -> None:
        ready = self._caught_up and self._consuming
        READY.labels(self._name).set(int(ready))
        if ready:
            self.ready.set()

    async def _until_ready(self, step: Callable[[], Awaitable[Any]]) -> Any:
        """Run a start-up step until it works; only outages are waited out."""
        delay = 0.5
        while True:
            try:
                return await step()
            except Exception as exc:
                if classify(exc) != "transient" and not isinstance(exc, KafkaError):
                    raise
                log.warning("projector_waiting", projection=self._name, error=repr(exc))
                if self._stop.is_set():
                    raise Stopping from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
