"""The envelope: an event plus where and when it was recorded."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol
from uuid import UUID

import msgspec

from schemas.events import Event


class Envelope(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One recorded event as the store, Kafka and the projectors see it."""

    event_id: UUID
    stream_id: str
    stream_version: int
    position: int
    occurred_at: datetime
    correlation_id: str | None = None
    causation_id: str | None = None
    event: Event


class LogEntry(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """An event with its position and time and nothing else: all that a projection keeping
    counts reads, and a third less work for the server and the decoder when a rebuild streams
    the log (``event_store.bulk_read.stream_log`` in the ``ENTRIES`` shape)."""

    position: int
    occurred_at: datetime
    event: Event


class Recorded(Protocol):
    """What ``Envelope`` and ``LogEntry`` share: code that reads only these takes either."""

    @property
    def position(self) -> int: ...

    @property
    def occurred_at(self) -> datetime: ...

    @property
    def event(self) -> Event: ...
