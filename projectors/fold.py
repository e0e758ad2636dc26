"""The pure fold of the log into comment views: what every projection must equal.

``evolve`` applies one event to a comment's view and is shared by the Elasticsearch comment
projection, ``tally verify`` and the property tests. Events at or below a view's position are
ignored, which is what makes duplicates and replays harmless. A deleted comment keeps its
counts but loses its text and author.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from uuid import UUID

import msgspec

from schemas.envelope import Envelope
from schemas.events import (
    CommentDeleted,
    CommentEdited,
    CommentPosted,
    VoteCast,
    VoteChanged,
    VoteRetracted,
)


class CommentView(msgspec.Struct, kw_only=True):
    """A comment as the read side shows it; ``position`` is the last event applied."""

    comment_id: UUID
    commentable_id: str
    author_id: str = ""
    parent_id: UUID | None = None
    content: str = ""
    created_at: datetime | None = None
    edited_at: datetime | None = None
    deleted: bool = False
    depth: int = 0
    up: int = 0
    down: int = 0
    score: int = 0
    position: int = 0


def evolve(view: CommentView | None, envelope: Envelope) -> CommentView | None:
    """The view after ``envelope``; unchanged if the event is at or below its position."""
    event = envelope.event
    if view is not None and envelope.position <= view.position:
        return view
    if view is None:
        view = CommentView(comment_id=event.comment_id, commentable_id=event.commentable_id)
    match event:
        case CommentPosted():
            view.author_id = event.author_id
            view.parent_id = event.parent_id
            view.depth = event.depth
            view.content = event.content
            view.created_at = envelope.occurred_at
        case CommentEdited():
            view.content = event.content
            view.edited_at = envelope.occurred_at
        case CommentDeleted():
            view.deleted = True  # and gone: no text, no author in any read model
            view.content = ""
            view.author_id = ""
        case VoteCast() | VoteChanged() | VoteRetracted():
            view.up += (event.value == 1) - (event.previous == 1)
            view.down += (event.value == -1) - (event.previous == -1)
            view.score = view.up - view.down
    view.position = envelope.position
    return view


def fold(envelopes: Iterable[Envelope]) -> dict[UUID, CommentView]:
    """Every comment's view after ``envelopes`` (in any order of delivery per comment)."""
    views: dict[UUID, CommentView] = {}
    for envelope in envelopes:
        comment_id = envelope.event.comment_id
        view = evolve(views.get(comment_id), envelope)
        if view is not None:
            views[comment_id] = view
    return views


def user_votes(envelopes: Iterable[Envelope]) -> dict[tuple[UUID, str], int]:
    """Every (comment, user) vote that is not 0, after ``envelopes``."""
    latest: dict[tuple[UUID, str], tuple[int, int]] = {}
    for envelope in envelopes:
        event = envelope.event
        if isinstance(event, VoteCast | VoteChanged | VoteRetracted):
            key = (event.comment_id, event.user_id)
            if envelope.position > latest.get(key, (0, 0))[0]:
                latest[key] = (envelope.position, event.value)
    return {key: value for key, (_, value) in latest.items() if value}
