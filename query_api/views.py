"""Response bodies of the query API."""

from __future__ import annotations

from typing import Any

import msgspec


class CommentOut(msgspec.Struct, kw_only=True):
    id: str
    commentable_id: str | None = None
    author_id: str | None = None
    parent_id: str | None = None
    content: str | None = None
    created_at: str | None = None
    edited_at: str | None = None
    deleted: bool = False
    up: int = 0
    down: int = 0
    score: int = 0


class ScoreOut(msgspec.Struct):
    comment_id: str
    up: int
    down: int
    score: int


class ScoresOut(msgspec.Struct):
    scores: list[ScoreOut]
    missing: list[str]


class CommentPage(msgspec.Struct):
    comments: list[CommentOut]
    next_cursor: str | None


class SearchResults(msgspec.Struct):
    comments: list[CommentOut]


class MyVotes(msgspec.Struct):
    votes: dict[str, int]


def comment_out(comment_id: str, doc: dict[str, Any] | None, counts: Any | None) -> CommentOut:
    """Merge a stored document (body) with live counts (Redis), either of which may be missing."""
    out = CommentOut(id=comment_id)
    if doc is not None:
        for field in (
            "commentable_id",
            "author_id",
            "parent_id",
            "content",
            "created_at",
            "edited_at",
            "deleted",
            "up",
            "down",
            "score",
        ):
            setattr(out, field, doc.get(field, getattr(out, field)))
    if counts is not None:
        out.up, out.down, out.score = counts.up, counts.down, counts.score
        out.deleted = out.deleted or counts.deleted
    return out
