"""Per-partition progress of one projection: gaps, duplicates, epochs and the low-water mark.

Pure logic (no I/O). For each partition of the current epoch, ``seen[p]`` means: every event of
partition ``p`` at or below it has been applied. The relay's headers (``event_store.messaging``)
keep that true:

- a message at or below ``seen[p]`` is a duplicate: skip it;
- a message whose ``prev`` is above ``seen[p]`` comes after lost messages: heal
  ``(seen[p], prev]`` of this partition from the event store first;
- a watermark says the partition holds nothing between ``prev`` and its position;
- a message of a newer epoch (another partition mapping) moves every partition down to the
  low-water mark of the old mapping: from there, the new mapping's chains cover everything. A
  message of an older epoch is skipped: what it carries is healed under the newer one.

The low-water mark is the least ``seen`` over every partition of the epoch: every event at or
below it has been applied, whatever partition it went to.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from event_store.messaging import WATERMARK, MessageHeaders


@dataclass(frozen=True)
class Heal:
    """Apply this partition's events in ``(after, upto]`` from the store before going on."""

    partition: int
    after: int
    upto: int
    partitions: int
    # Why: "gap" (a message's ``prev`` says events were lost in Kafka) or "standstill" (the
    # watchdog found the log ahead while nothing arrived).
    cause: str = "gap"


@dataclass(frozen=True)
class Admission:
    """What to do with one message."""

    apply: bool  # an event to apply (after ``heal``, if any)
    heal: Heal | None = None
    new_epoch: bool = False  # the mapping changed: persist the tracker as a whole
    advance: bool = True  # the message counts for its partition (not one of an older epoch)


STALE = Admission(apply=False, advance=False)


@dataclass
class PartitionTracker:
    """``seen`` per partition of one epoch; see the module docstring."""

    epoch: int = 0
    partitions: int = 0
    seen: dict[int, int] = field(default_factory=dict)

    def low_water_mark(self) -> int:
        """Every event at or below this position has been applied."""
        if not self.partitions:
            return 0
        return min(self.seen.get(p, 0) for p in range(self.partitions))

    def admit(self, partition: int, headers: MessageHeaders) -> Admission:
        """Decide about one message; once it (and its heal) is applied, call ``advance`` if the
        admission says so: a message of an older epoch says nothing about this mapping."""
        new_epoch = False
        if headers.epoch < self.epoch:
            return STALE
        if headers.epoch > self.epoch or (
            headers.partitions and headers.partitions != self.partitions
        ):
            self.switch(headers.epoch, headers.partitions)
            new_epoch = True
        seen = self.seen.get(partition, 0)
        if headers.position <= seen:
            return Admission(apply=False, new_epoch=new_epoch)
        heal = None
        if headers.prev > seen:
            heal = Heal(partition, seen, headers.prev, self.partitions)
        return Admission(apply=headers.kind != WATERMARK, heal=heal, new_epoch=new_epoch)

    def advance(self, partition: int, position: int) -> None:
        """Everything of ``partition`` up to ``position`` is applied (never moves back)."""
        if position > self.seen.get(partition, 0):
            self.seen[partition] = position

    def snapshot(self) -> PartitionTracker:
        """A copy that later admissions and advances leave as it is."""
        return PartitionTracker(self.epoch, self.partitions, dict(self.seen))

    def switch(self, epoch: int, partitions: int) -> None:
        """Adopt a new mapping, starting every partition at the old low-water mark."""
        floor = self.low_water_mark() if self.partitions else min(self.seen.values(), default=0)
        self.epoch = epoch
        self.partitions = partitions
        self.seen = dict.fromkeys(range(partitions), floor)
