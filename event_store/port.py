"""The event store port: append with expected version; read a stream, a comment's history, or
everything from a position; find the comments touched in a range.

``event_store.postgres`` and ``event_store.memory`` implement it (one shared contract test);
the projector runner, the reconciler, verify and the in-memory write side use it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Protocol
from uuid import UUID

import msgspec

from kernel.ids import random_uuid
from schemas.envelope import Envelope
from schemas.events import Event


class PendingEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An event decided but not yet recorded, with the stream version it will get."""

    stream_id: str
    stream_version: int
    event: Event
    event_id: UUID = msgspec.field(default_factory=random_uuid)
    correlation_id: str | None = None
    causation_id: str | None = None
    traceparent: str | None = None


class Origin(msgspec.Struct, frozen=True, kw_only=True):
    """The request a command came from, stored in the metadata of the events it appends."""

    correlation_id: str | None = None
    traceparent: str | None = None


NO_ORIGIN = Origin()


class EventStore(Protocol):
    """What the write side and the operators need from a log."""

    async def append(
        self,
        stream_id: str,
        expected_version: int,
        events: Sequence[Event],
        correlation_id: str | None = None,
    ) -> list[int]:
        """Append ``events`` if the stream is at ``expected_version``; return their positions.

        Raises ``ConcurrencyError`` if the stream has another version.
        """
        ...

    async def read_stream(self, stream_id: str) -> list[Envelope]:
        """Every event of one stream, oldest first."""
        ...

    def read_all(
        self, after: int = 0, batch_size: int = 1000, until: int | None = None
    ) -> AsyncIterator[list[Envelope]]:
        """Every event with a position above ``after`` (up to ``until``), in order, in batches."""
        ...

    async def head(self) -> int:
        """The highest position recorded so far (0 when empty)."""
        ...

    async def read_comments(
        self,
        comment_ids: Sequence[str],
        until: int | None = None,
        after: Mapping[str, int] | None = None,
    ) -> dict[str, list[Envelope]]:
        """Every event of each comment (its own and its votes) up to ``until``, in order;
        with ``after``, only those above the position it gives for that comment."""
        ...

    async def comments_touched(self, after: int, upto: int, limit: int) -> list[str]:
        """The comments with events in ``(after, upto]``, most recently touched first."""
        ...

    async def comments_after(self, comment_id: str, limit: int) -> list[str]:
        """Up to ``limit`` comment ids above ``comment_id`` (``""``: from the start), in order."""
        ...


def stream_of_comment(comment_id: UUID) -> str:
    """The stream id of a comment's own events."""
    return f"comment-{comment_id}"


def stream_of_vote(comment_id: UUID, user_id: str) -> str:
    """The stream id of one user's vote on one comment."""
    return f"vote-{comment_id}-{user_id}"
