"""The envelope: an event plus where and when it was recorded."""

from __future__ import annotations

from datetime import datetime
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
