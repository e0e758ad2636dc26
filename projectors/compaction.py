"""Fold a batch of events into one change per comment: the rebuild's fast path.

A rebuild applies a million events; sending each to Redis costs far more than folding them
here first. The change of a comment carries the position range it covers, so the store can
tell an already-applied change (skip) from a part-applied one (apply its events one by one).
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

import msgspec

from schemas.envelope import Recorded
from schemas.events import CommentDeleted, CommentPosted, VoteEventBase


class CommentChange(msgspec.Struct, array_like=True, gc=False):
    """What a batch did to one comment.

    Sent to the merge script as a msgpack array in this field order (``redis_merge.lua``), so
    the fields' order is part of that contract. Holds only text, numbers and a dict of them, so
    it can never be part of a cycle: the collector need not track it.
    """

    commentable_id: str
    first: int
    last: int
    created_ms: int = -1  # set when the comment was posted in this batch
    deleted: bool = False
    up: int = 0  # deltas
    down: int = 0
    votes: dict[str, int] = msgspec.field(default_factory=dict)  # user -> vote after the batch
    parent: str = ""  # the comment it replies to ("" at the top level)
    depth: int = 0


def compact(envelopes: Sequence[Recorded]) -> dict[str, CommentChange]:
    """One change per comment id, for events given in position order."""
    # Keyed by the UUID's integer while folding: hashing and comparing a UUID are Python calls
    # (a fifth of the fold's time), and its text is made once per comment, not once per event.
    changes: dict[int, CommentChange] = {}
    ids: dict[int, UUID] = {}
    for envelope in envelopes:
        event = envelope.event
        key = event.comment_id.int
        change = changes.get(key)
        if change is None:
            change = changes[key] = CommentChange(
                event.commentable_id, envelope.position, envelope.position
            )
            ids[key] = event.comment_id
            if event.parent_id is not None:
                change.parent = str(event.parent_id)
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
    return {str(ids[key]): change for key, change in changes.items()}
