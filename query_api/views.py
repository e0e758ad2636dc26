"""Response bodies of the query API."""

from __future__ import annotations

from typing import Any

import msgspec


class CommentOut(msgspec.Struct, kw_only=True):
    """A comment as readers see it. A deleted one has no content and no author."""

    id: str
    commentable_id: str | None = None
    author_id: str | None = None
    parent_id: str | None = None
    depth: int = 0
    content: str | None = None
    created_at: str | None = None
    edited_at: str | None = None
    deleted: bool = False
    up: int = 0
    down: int = 0
    score: int = 0
    reply_count: int = 0
    my_vote: int | None = None  # the viewer's vote (-1, 0, 1); null without a bearer token


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
    comment_count: int  # in the whole commentable, replies included


class FoundComment(CommentOut, kw_only=True):
    """A comment a search found, with the matched words marked in fragments of its text
    (``<em>`` around each; the rest of the text HTML-escaped)."""

    highlights: list[str] = msgspec.field(default_factory=list)


class SearchResults(msgspec.Struct):
    comments: list[FoundComment]
    next_cursor: str | None = None  # the next page of the same search, if there is one


class MyVotes(msgspec.Struct):
    votes: dict[str, int]


_STORED = (
    "commentable_id",
    "author_id",
    "parent_id",
    "depth",
    "content",
    "created_at",
    "edited_at",
    "deleted",
    "up",
    "down",
    "score",
)


def comment_out(
    comment_id: str,
    doc: dict[str, Any] | None,
    counts: Any | None,
    my_vote: int | None = None,
) -> CommentOut:
    """Merge a stored document (body) with live counts (Redis), either of which may be missing,
    and the viewer's vote."""
    out = CommentOut(id=comment_id, my_vote=my_vote)
    if doc is not None:
        for field in _STORED:
            setattr(out, field, doc.get(field, getattr(out, field)))
    if counts is not None:
        out.up, out.down, out.score = counts.up, counts.down, counts.score
        out.deleted = out.deleted or counts.deleted
        out.reply_count, out.depth = counts.replies, counts.depth
        out.parent_id = counts.parent or out.parent_id  # the thread is Redis's, never behind
    if out.deleted:  # whatever a stale copy still holds
        out.content = out.author_id = None
    return out
