"""Domain events: one frozen msgspec Struct per type, tagged by ``type``.

Schema evolution follows msgspec's rules: new fields get defaults, a field never changes type.
A breaking change bumps ``schema_version`` and adds an upcaster in ``schemas.codec``.
"""

from __future__ import annotations

from typing import Literal
from uuid import UUID

import msgspec

VoteValue = Literal[-1, 0, 1]


class BaseEvent(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", gc=False):
    """Fields every event has. ``comment_id`` is also the Kafka key; ``parent_id`` says which
    thread the comment is in (``None``: top level), so projectors rank it where it belongs
    without looking anything up."""

    comment_id: UUID
    commentable_id: str
    parent_id: UUID | None = None
    schema_version: int = 1


class CommentPosted(BaseEvent, frozen=True, kw_only=True, tag=True):
    author_id: str
    content: str
    depth: int = 0  # 0 at the top level, the parent's depth + 1 for a reply


class CommentEdited(BaseEvent, frozen=True, kw_only=True, tag=True):
    author_id: str
    content: str


class CommentDeleted(BaseEvent, frozen=True, kw_only=True, tag=True):
    author_id: str


class VoteEventBase(BaseEvent, frozen=True, kw_only=True):
    """A vote event carries the new value and the previous one, so projectors never look up."""

    user_id: str
    value: VoteValue
    previous: VoteValue
    # Who wrote the comment, as the decider knew it: analysts count votes received per author
    # without a join. ``None`` in events written before the field existed.
    comment_author_id: str | None = None

    @property
    def delta(self) -> int:
        """How much this event moves the comment's score."""
        return self.value - self.previous


class VoteCast(VoteEventBase, frozen=True, kw_only=True, tag=True):
    """First vote of a user on a comment (previous is 0)."""


class VoteChanged(VoteEventBase, frozen=True, kw_only=True, tag=True):
    """Up to down or down to up."""


class VoteRetracted(VoteEventBase, frozen=True, kw_only=True, tag=True):
    """The vote went back to 0."""


CommentEvent = CommentPosted | CommentEdited | CommentDeleted
VoteEvent = VoteCast | VoteChanged | VoteRetracted
Event = CommentPosted | CommentEdited | CommentDeleted | VoteCast | VoteChanged | VoteRetracted
EVENT_TYPES: dict[str, type[Event]] = {
    cls.__name__: cls
    for cls in (CommentPosted, CommentEdited, CommentDeleted, VoteCast, VoteChanged, VoteRetracted)
}
CURRENT_SCHEMA_VERSION = 1
