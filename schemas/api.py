"""HTTP request and response bodies. Requests forbid unknown fields."""

from __future__ import annotations

import re
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
# An RFC 3339 date-time, as OpenAPI's ``date-time`` format means it: a time zone is required
# (a time without one names no instant), ``T`` between date and time, no leap second.
TIMESTAMP_PATTERN = (
    r"^\d{4}-\d{2}-\d{2}[Tt]([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d+)?"
    r"([Zz]|[+-]([01]\d|2[0-3]):[0-5]\d)$"
)


def parse_timestamp(text: str) -> datetime:
    """The instant ``text`` (an RFC 3339 date-time) names; ``ValueError`` for anything else,
    an impossible date (February 30) included."""
    if not re.fullmatch(TIMESTAMP_PATTERN, text):
        raise ValueError("not an RFC 3339 date-time with a time zone (2026-12-04T10:00:00Z)")
    date, time = text[:10], text[11:]
    zone_at = max(time.rfind("+"), time.rfind("-"), time.upper().rfind("Z"))
    clock, zone = time[:zone_at], time[zone_at:].upper()
    whole, _, fraction = clock.partition(".")
    micros = (fraction + "000000")[:6]
    offset = "+00:00" if zone == "Z" else zone
    return datetime.fromisoformat(f"{date}T{whole}.{micros}{offset}")


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
