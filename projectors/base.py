"""What a projection is, for the runner: a name and an idempotent ``apply``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from schemas.envelope import Envelope


class CannotApply(Exception):
    """This event cannot be applied by this projection (a poison event, not an outage)."""

    def __init__(self, envelope: Envelope, reason: str) -> None:
        super().__init__(f"position {envelope.position}: {reason}")
        self.envelope = envelope
        self.reason = reason


class Projection(Protocol):
    """A read model fed by the log.

    ``apply`` must be idempotent per comment: it stores, atomically with each change, the
    position of the last event applied to that comment, and skips events at or below it. It
    raises ``CannotApply`` for an event it can never apply; any other exception means "try
    again later" (its store is down).
    """

    name: str

    async def setup(self) -> None:
        """Create indices, load scripts: whatever ``apply`` needs to exist."""
        ...

    async def apply(self, envelopes: Sequence[Envelope]) -> None:
        """Apply a batch of events, in order."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
