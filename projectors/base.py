"""What a projection is, for the runner: a name, an idempotent ``apply``, and its integrity."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from projectors.judging import CommentHistory, Finding
from schemas.envelope import Envelope, Recorded


class CannotApply(Exception):
    """This event cannot be applied by this projection (a poison event, not an outage)."""

    def __init__(self, envelope: Recorded, reason: str) -> None:
        super().__init__(f"position {envelope.position}: {reason}")
        self.envelope = envelope
        self.reason = reason


class StoreBusy(Exception):
    """The store refused the write for now (back-pressure, a blocked index): try again later."""


class ReadModelLost(Exception):
    """The store lost what this projection wrote (flushed, deleted): it must be rebuilt.

    Raised after everything that could be applied was; what could not (a vote on a comment the
    store no longer has) is left for the rebuild, which replays the whole log.
    """


class Projection(Protocol):
    """A read model fed by the log.

    ``apply`` must be idempotent per comment: it stores, atomically with each change, the
    position of the last event applied to that comment, and skips events at or below it. It
    raises ``CannotApply`` for an event it can never apply, ``ReadModelLost`` when its store
    lost its data; any other exception is classified by ``projectors.store_errors``.
    """

    name: str

    async def setup(self) -> None:
        """Create indices, load scripts: whatever ``apply`` needs to exist."""
        ...

    async def apply(self, envelopes: Sequence[Envelope]) -> None:
        """Apply a batch of events, in order."""
        ...

    async def intact(self) -> bool:
        """Does the store still hold what this projection wrote (its marker is there)?"""
        ...

    async def mark_intact(self) -> None:
        """Set the marker: the projection starts from nothing, so what it holds is whole."""
        ...

    async def reconcile(
        self, histories: Mapping[str, CommentHistory], low_water: int, repair: bool
    ) -> list[Finding]:
        """Compare what it holds for each comment with the fold of the comment's history
        (``projectors.judging``); with ``repair``, write the fold, guarded by position."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
