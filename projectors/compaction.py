"""Fold a batch of events into one change per comment: the rebuild's fast path.

A rebuild applies a million events; sending each to Redis costs far more than folding them
here first. The change of a comment carries the position range it covers, so the store can
tell an already-applied change (skip) from a part-applied one (apply its events one by one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from uuid import UUID

from schemas.envelope import Envelope
from schemas.events import CommentDeleted, CommentPosted, VoteEventBase


@dataclass(slots=True)
class CommentChange:
    """What a batch did to one comment."""

    commentable_id: str
    first: int
    last: int
    created_ms: int = -1  # set when the comment was posted in this batch
    deleted: bool = False
    up: int = 0  # deltas
    down: int = 0
    votes: dict[str, int] = field(default_factory=dict)  # user -> vote after the batch
    parent: str = ""  # the comment it replies to ("" at the top level)
    depth: int = 0


def compact(envelopes: Sequence[Envelope]) -> dict[str, CommentChange]:
    """One change per comment id, for events given in position order."""
    # Keyed by the UUID while folding: its text is made once per comment, not once per event.
    changes: dict[UUID, CommentChange] = {}
    for envelope in envelopes:
        event = envelope.event
        change = changes.get(event.comment_id)
        if change is None:
            change = changes[event.comment_id] = CommentChange(
                event.commentable_id, envelope.position, envelope.position
            )
            change.parent = str(event.parent_id) if event.parent_id else ""
        change.last = envelope.position
        if isinstance(event, VoteEventBase):
            change.up += (event.value == 1) - (event.previous == 1)
            change.down += (event.value == -1) - (event.previous == -1)
            change.votes[event.user_id] = event.value
        elif isinstance(event, CommentPosted):
            change.created_ms = int(envelope.occurred_at.timestamp() * 1000)
            change.depth = event.depth
        elif isinstance(event, CommentDeleted):
            change.deleted = True
    return {str(comment_id): change for comment_id, change in changes.items()}
