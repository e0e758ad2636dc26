"""An in-memory event store for unit tests; the same contract as PostgreSQL (held to it by the
shared contract test), and what ``command_api.memory`` writes through."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime

from event_store.errors import ConcurrencyError
from event_store.port import PendingEvent
from kernel.ids import random_uuid
from schemas.envelope import Envelope
from schemas.events import Event


class InMemoryEventStore:
    """Keeps the log in a list; positions start at 1 and have no holes."""

    def __init__(self) -> None:
        self._log: list[Envelope] = []
        self._versions: dict[str, int] = {}

    async def append(
        self,
        stream_id: str,
        expected_version: int,
        events: Sequence[Event],
        correlation_id: str | None = None,
    ) -> list[int]:
        """See ``EventStore.append``."""
        current = self._versions.get(stream_id, 0)
        if current != expected_version:
            raise ConcurrencyError(
                f"{stream_id} is at version {current}, expected {expected_version}"
            )
        now = datetime.now(UTC)
        positions = []
        for offset, event in enumerate(events, start=1):
            position = len(self._log) + 1
            self._log.append(
                Envelope(
                    event_id=random_uuid(),
                    stream_id=stream_id,
                    stream_version=current + offset,
                    position=position,
                    occurred_at=now,
                    correlation_id=correlation_id,
                    event=event,
                )
            )
            positions.append(position)
        self._versions[stream_id] = current + len(events)
        return positions

    async def append_pending(self, pending: Sequence[PendingEvent]) -> list[int]:
        """Record decided events at their stream versions, all or none; their positions."""
        versions = dict(self._versions)
        for event in pending:
            if event.stream_version != versions.get(event.stream_id, 0) + 1:
                raise ConcurrencyError(
                    f"{event.stream_id} is at version {versions.get(event.stream_id, 0)}"
                )
            versions[event.stream_id] = event.stream_version
        now = datetime.now(UTC)
        positions = []
        for event in pending:
            position = len(self._log) + 1
            self._log.append(
                Envelope(
                    event_id=event.event_id,
                    stream_id=event.stream_id,
                    stream_version=event.stream_version,
                    position=position,
                    occurred_at=now,
                    correlation_id=event.correlation_id,
                    causation_id=event.causation_id,
                    event=event.event,
                )
            )
            positions.append(position)
        self._versions = versions
        return positions

    def last_position(self, stream_id: str) -> int:
        """The position of the stream's latest event (0 for a stream never written)."""
        return max((e.position for e in self._log if e.stream_id == stream_id), default=0)

    async def read_stream(self, stream_id: str) -> list[Envelope]:
        """See ``EventStore.read_stream``."""
        return [e for e in self._log if e.stream_id == stream_id]

    async def read_all(
        self, after: int = 0, batch_size: int = 1000, until: int | None = None
    ) -> AsyncIterator[list[Envelope]]:
        """See ``EventStore.read_all``."""
        end = len(self._log) if until is None else min(until, len(self._log))
        for start in range(after, end, batch_size):
            yield self._log[start : min(start + batch_size, end)]

    async def head(self) -> int:
        """See ``EventStore.head``."""
        return len(self._log)

    async def read_comments(
        self,
        comment_ids: Sequence[str],
        until: int | None = None,
        after: Mapping[str, int] | None = None,
    ) -> dict[str, list[Envelope]]:
        """See ``EventStore.read_comments``."""
        after = after or {}
        histories: dict[str, list[Envelope]] = {c: [] for c in comment_ids}
        for envelope in self._log:
            comment_id = str(envelope.event.comment_id)
            if (
                comment_id in histories
                and envelope.position > after.get(comment_id, 0)
                and (until is None or envelope.position <= until)
            ):
                histories[comment_id].append(envelope)
        return histories

    async def comments_touched(self, after: int, upto: int, limit: int) -> list[str]:
        """See ``EventStore.comments_touched``."""
        latest: dict[str, int] = {}
        for envelope in self._log[after:upto]:
            latest[str(envelope.event.comment_id)] = envelope.position
        return sorted(latest, key=lambda c: -latest[c])[:limit]

    async def comments_after(self, comment_id: str, limit: int) -> list[str]:
        """See ``EventStore.comments_after``."""
        ids = sorted({str(e.event.comment_id) for e in self._log})
        return [c for c in ids if c > comment_id][:limit]
