"""``tally verify``: prove the read models equal a fold of the event store.

The store is read up to its head at the start and grouped by comment; each projection then
compares what it holds with the fold of each comment's history (``reconcile`` without repair,
judged by ``projectors.judging``: the same oracle as the reconciler and the tests). On a live
system a projection may already be past that head for some comments: those are not wrong.
Before comparing, verify waits (bounded) until the projections' low-water marks reach the head.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from event_store.port import EventStore
from projectors.base import Projection
from projectors.judging import CommentHistory
from schemas.envelope import Envelope

CHUNK = 1000  # comments per comparison


@dataclass
class Report:
    """What one projection's check found."""

    projection: str
    checked: int = 0
    mismatches: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches


async def read_log(store: EventStore) -> tuple[int, list[Envelope]]:
    """The head position and every event up to it."""
    head = await store.head()
    events = [e async for batch in store.read_all(until=head, batch_size=10_000) for e in batch]
    return head, events


def histories_of(events: Sequence[Envelope]) -> dict[str, list[Envelope]]:
    """Each comment's events, in order."""
    histories: dict[str, list[Envelope]] = defaultdict(list)
    for envelope in events:
        histories[str(envelope.event.comment_id)].append(envelope)
    return histories


async def wait_until(reached: Callable[[], Awaitable[int]], head: int, seconds: float) -> bool:
    """Wait until ``reached()`` is at ``head``; False if it was not in time."""
    deadline = time.monotonic() + seconds
    while await reached() < head:
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.2)
    return True


async def check(projection: Projection, histories: dict[str, list[Envelope]], head: int) -> Report:
    """Compare one projection with the fold of every history (nothing is repaired)."""
    report = Report(projection.name)
    ids = list(histories)
    for start in range(0, len(ids), CHUNK):
        chunk = {c: CommentHistory(histories[c]) for c in ids[start : start + CHUNK]}
        findings = await projection.reconcile(chunk, head, repair=False)
        report.checked += len(chunk)
        report.mismatches += [str(f) for f in findings]
    return report


async def verify(
    store: EventStore,
    projections: Sequence[Projection],
    low_water: Callable[[str], Awaitable[int]],
    wait_seconds: float = 30,
) -> tuple[int, list[Report]]:
    """Compare ``projections`` with the fold of the store; return (head, reports)."""
    head, events = await read_log(store)
    histories = histories_of(events)
    reports = []
    for projection in projections:
        await wait_until(functools.partial(low_water, projection.name), head, wait_seconds)
        reports.append(await check(projection, histories, head))
    return head, reports
