"""The partition tracker: duplicates, gaps, watermarks and epochs (pure, with a simulated relay)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from uuid import UUID

from hypothesis import given, settings
from hypothesis import strategies as st

from event_store.messaging import EVENT, WATERMARK, MessageHeaders
from event_store.partitioning import partition_for
from projectors.partition_tracker import Heal, PartitionTracker


def event(position: int, prev: int, epoch: int = 1, partitions: int = 2) -> MessageHeaders:
    return MessageHeaders(position=position, prev=prev, epoch=epoch, partitions=partitions)


def test_a_message_at_or_below_what_was_seen_is_a_duplicate() -> None:
    tracker = PartitionTracker(1, 2, {0: 10, 1: 4})
    admission = tracker.admit(0, event(10, 7))
    assert not admission.apply and admission.heal is None


def test_a_prev_above_what_was_seen_asks_to_heal_the_gap_first() -> None:
    tracker = PartitionTracker(1, 2, {0: 10, 1: 4})
    admission = tracker.admit(0, event(20, 15))
    assert admission.apply
    assert admission.heal == Heal(partition=0, after=10, upto=15, partitions=2)


def test_a_watermark_moves_a_quiet_partition_and_the_low_water_mark() -> None:
    tracker = PartitionTracker(1, 2, {0: 30, 1: 4})
    assert tracker.low_water_mark() == 4
    admission = tracker.admit(1, MessageHeaders(kind=WATERMARK, position=30, prev=4, epoch=1))
    assert not admission.apply and admission.heal is None and admission.advance
    tracker.advance(1, 30)
    assert tracker.low_water_mark() == 30


def test_a_new_epoch_starts_every_partition_at_the_old_low_water_mark() -> None:
    tracker = PartitionTracker(1, 2, {0: 30, 1: 12})
    admission = tracker.admit(2, event(41, 35, epoch=2, partitions=4))
    assert admission.new_epoch and admission.apply
    assert tracker.seen == {0: 12, 1: 12, 2: 12, 3: 12}
    assert admission.heal == Heal(partition=2, after=12, upto=35, partitions=4)


def test_a_message_of_an_older_epoch_changes_nothing_after_a_switch() -> None:
    tracker = PartitionTracker(2, 4, {0: 12, 1: 12, 2: 12, 3: 12})
    admission = tracker.admit(2, event(30, 20, epoch=1, partitions=2))
    assert not admission.apply and admission.heal is None and not admission.advance


def test_a_partition_never_heard_of_holds_the_low_water_mark_at_zero() -> None:
    assert PartitionTracker(1, 3, {0: 9, 1: 9}).low_water_mark() == 0


# --- A simulated relay, broker and projector, checked against the log -------------------------


@dataclass
class Projection:
    """Per comment, the positions applied in order, with the live projections' guard."""

    last: dict[UUID, int] = field(default_factory=dict)
    applied: dict[UUID, list[int]] = field(default_factory=dict)

    def apply(self, position: int, comment: UUID) -> None:
        if position > self.last.get(comment, 0):
            self.last[comment] = position
            self.applied.setdefault(comment, []).append(position)


@dataclass
class World:
    log: list[UUID]  # comment of the event at position n + 1
    rng: random.Random
    epoch: int = 0
    partitions: int = 0
    chain: dict[int, int] = field(default_factory=dict)
    committed: int = 0
    topic: list[list[tuple[MessageHeaders, UUID | None]]] = field(default_factory=list)
    # The last publish, per partition: a producer may still deliver it late, after a new epoch.
    in_flight: dict[int, list[tuple[MessageHeaders, UUID | None]]] = field(default_factory=dict)

    def new_epoch(self, partitions: int) -> None:
        published = max(self.chain.values(), default=0)
        self.epoch += 1
        self.partitions = partitions
        self.chain = dict.fromkeys(range(partitions), published)
        self.topic = [[] for _ in range(partitions)]

    def publish(self, upto: int, commit: bool) -> None:
        """Publish positions committed+1..upto; commit the chain only if ``commit``."""
        chain = dict(self.chain)
        self.in_flight = {}
        for position in range(self.committed + 1, upto + 1):
            comment = self.log[position - 1]
            partition = partition_for(comment, self.partitions)
            headers = MessageHeaders(
                kind=EVENT,
                position=position,
                prev=chain[partition],
                epoch=self.epoch,
                partitions=self.partitions,
            )
            self.topic[partition].append((headers, comment))
            self.in_flight.setdefault(partition, []).append((headers, comment))
            chain[partition] = position
        if commit:
            self.chain = chain
            self.committed = upto

    def watermarks(self) -> None:
        published = max(self.chain.values(), default=0)
        for partition in range(self.partitions):
            headers = MessageHeaders(
                kind=WATERMARK,
                position=published,
                prev=self.chain[partition],
                epoch=self.epoch,
                partitions=self.partitions,
            )
            self.topic[partition].append((headers, None))


def heal(log: list[UUID], projection: Projection, heal: Heal) -> None:
    for position in range(heal.after + 1, heal.upto + 1):
        comment = log[position - 1]
        if partition_for(comment, heal.partitions) == heal.partition:
            projection.apply(position, comment)


def consume(
    world: World,
    tracker: PartitionTracker,
    projection: Projection,
    offsets: list[int],
    limit: int = 10**9,
) -> None:
    """Read up to ``limit`` new messages, partitions interleaved at random."""
    for _ in range(limit):
        ready = [p for p in range(len(world.topic)) if offsets[p] < len(world.topic[p])]
        if not ready:
            return
        partition = world.rng.choice(ready)
        headers, comment = world.topic[partition][offsets[partition]]
        offsets[partition] += 1
        admission = tracker.admit(partition, headers)
        if admission.heal is not None:
            heal(world.log, projection, admission.heal)
            tracker.advance(admission.heal.partition, admission.heal.upto)
        if admission.apply and comment is not None:
            projection.apply(headers.position, comment)
        if admission.advance:
            tracker.advance(partition, headers.position)
        assert_low_water_mark_holds(world.log, tracker, projection)


def assert_low_water_mark_holds(
    log: list[UUID], tracker: PartitionTracker, projection: Projection
) -> None:
    """Every event at or below the low-water mark is applied."""
    mark = tracker.low_water_mark()
    for position in range(1, mark + 1):
        comment = log[position - 1]
        assert projection.last.get(comment, 0) >= position, (position, mark)


steps = st.lists(
    st.tuples(
        st.sampled_from(
            ["publish", "crash", "lose", "epoch", "watermark", "read", "restart", "late"]
        ),
        st.integers(1, 15),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(steps=steps, comments=st.integers(1, 12), seed=st.integers(0, 2**32))
def test_every_event_is_applied_once_and_in_order_whatever_the_broker_does(
    steps: list[tuple[str, int]], comments: int, seed: int
) -> None:
    rng = random.Random(seed)
    log = [UUID(int=rng.randrange(comments) + 1) for _ in range(400)]
    world = World(log, rng)
    world.new_epoch(rng.choice([1, 2, 3, 6]))
    tracker = PartitionTracker()
    saved = PartitionTracker()
    projection = Projection()
    offsets = [0] * world.partitions
    for action, amount in steps:
        upto = min(len(log), world.committed + amount)
        if action == "publish":
            world.publish(upto, commit=True)
        elif action == "crash":  # published and acked, the relay died before it committed
            world.publish(upto, commit=False)
        elif action == "lose":  # the broker lost the topic; it comes back empty
            world.topic = [[] for _ in range(world.partitions)]
            offsets = [0] * world.partitions
        elif action == "epoch":  # it came back with another partition count
            world.new_epoch(rng.choice([1, 2, 3, 4, 6]))
            offsets = [0] * world.partitions
        elif action == "watermark":
            world.watermarks()
        elif action == "late":  # a retried send lands again, after whatever came since
            for partition, messages in world.in_flight.items():
                if partition < len(world.topic):
                    world.topic[partition] += messages
        elif action == "restart":  # the projector restarts from what it saved
            tracker = PartitionTracker(saved.epoch, saved.partitions, dict(saved.seen))
            offsets = [max(0, o - amount) for o in offsets]  # redelivery from older offsets
        offsets += [0] * (len(world.topic) - len(offsets))
        if action == "read":  # the projector may lag behind the relay by any amount
            consume(world, tracker, projection, offsets, limit=amount * 3)
            saved = PartitionTracker(tracker.epoch, tracker.partitions, dict(tracker.seen))
    # In the end everything is published and a watermark goes round: all applied, in order.
    world.publish(len(log), commit=True)
    world.watermarks()
    consume(world, tracker, projection, offsets)
    assert tracker.low_water_mark() == len(log)
    for comment in set(log):
        assert projection.applied[comment] == [n + 1 for n, c in enumerate(log) if c == comment], (
            "each comment's events applied once each, in order, none missing"
        )
