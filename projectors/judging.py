"""Does what a read model holds for a comment equal the fold of the comment's history?

Pure. A read model claims that a comment reflects every event of it at or below its stored
position (events are applied per comment in order). So the stored state is compared with the
fold of the history *up to that position*, which is exact even while the projection is behind.
It is also wrong when it is behind events the projection says it has applied (at or below its
low-water mark). A stored position past the history means the projection moved on since the
history was read: nothing to say.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import msgspec

from projectors.fold import CommentView, fold, user_votes
from schemas.envelope import Envelope


class StoredComment(msgspec.Struct, frozen=True, kw_only=True):
    """What a read model holds for one comment (``votes``/``content`` where it keeps them)."""

    position: int
    up: int
    down: int
    deleted: bool = False
    votes: dict[str, int] | None = None
    content: str | None = None


class Truth(NamedTuple):
    """A comment after the events of its history up to some position."""

    view: CommentView
    votes: dict[str, int]


class Finding(NamedTuple):
    """One comment a read model has wrong, and how."""

    projection: str
    comment_id: str
    detail: str

    def __str__(self) -> str:
        return f"{self.projection}: comment {self.comment_id}: {self.detail}"


def truth_at(history: Sequence[Envelope], position: int | None = None) -> Truth | None:
    """The comment after its events at or below ``position`` (all of them by default)."""
    events = [e for e in history if position is None or e.position <= position]
    views = fold(events)
    if not views:
        return None
    view = next(iter(views.values()))
    votes = {user: value for (_, user), value in user_votes(events).items()}
    return Truth(view, votes)


def judge(stored: StoredComment | None, history: Sequence[Envelope], low_water: int) -> str | None:
    """How ``stored`` differs from the fold of ``history``; ``None`` when it does not."""
    if not history:
        return None
    last = history[-1].position
    if stored is None:
        return f"missing (the log has it at position {last})" if last <= low_water else None
    if stored.position > last:
        return None  # moved on since the history was read
    truth = truth_at(history, stored.position)
    if truth is None or stored.position not in {e.position for e in history}:
        return f"stored at position {stored.position}, which is none of its events"
    want = truth.view
    wrong = []
    for name, got, expected in (
        ("up", stored.up, want.up),
        ("down", stored.down, want.down),
        ("deleted", stored.deleted, want.deleted),
    ):
        if got != expected:
            wrong.append(f"{name} is {got} but should be {expected}")
    if stored.votes is not None and stored.votes != truth.votes:
        wrong.append(f"votes are {stored.votes}, should be {truth.votes}")
    if stored.content is not None and stored.content != want.content:
        wrong.append("content differs")
    if stored.position < last <= low_water:
        wrong.append(f"position is {stored.position} but should be {last}")
    return ", ".join(wrong) or None
