"""HTTP request and response bodies. Requests forbid unknown fields."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

import msgspec

from schemas.events import VoteValue

# One rule for a commentable's id wherever one comes in: written, read, searched, streamed.
COMMENTABLE_ID_CHARS = "A-Za-z0-9_.:-"
COMMENTABLE_ID_MAX = 128
COMMENTABLE_ID_PATTERN = rf"^[{COMMENTABLE_ID_CHARS}]{{1,{COMMENTABLE_ID_MAX}}}$"
CommentableId = Annotated[
    str,
    msgspec.Meta(
        min_length=1, max_length=COMMENTABLE_ID_MAX, pattern=rf"^[{COMMENTABLE_ID_CHARS}]+$"
    ),
]
# Text that PostgreSQL's jsonb and Elasticsearch take as it is: no NUL or other control
# characters (tab, newline and carriage return are fine), no Unicode non-characters.
TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff]*$"
Content = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=10_000,
        pattern=TEXT_PATTERN,
        description="1 to 10,000 characters; no control characters but tab and newlines",
    ),
]


class PostCommentBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    commentable_id: CommentableId
    content: Content
    parent_id: UUID | None = None


class EditCommentBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    content: Content


class VoteBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    value: VoteValue


class CommentCreated(msgspec.Struct, frozen=True):
    id: UUID
    created_at: datetime
    position: int


class CommentChanged(msgspec.Struct, frozen=True):
    id: UUID
    position: int


class VoteRecorded(msgspec.Struct, frozen=True):
    comment_id: UUID
    value: VoteValue
    previous: VoteValue
    position: int


Reply = CommentCreated | CommentChanged | VoteRecorded
