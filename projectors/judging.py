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

from projectors.fold import CommentView, evolve
from schemas.envelope import Envelope
from schemas.events import VoteCast, VoteChanged, VoteRetracted


class StoredComment(msgspec.Struct, frozen=True, kw_only=True):
    """What a read model holds for one comment (``votes``/``content`` where it keeps them).

    ``votes`` holds every user's vote, or with ``votes_of`` only those users' (the others are
    as an earlier pass found them), and then ``vote_count`` counts them all.
    """

    position: int
    up: int
    down: int
    deleted: bool = False
    votes: dict[str, int] | None = None
    votes_of: frozenset[str] | None = None
    vote_count: int | None = None
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


class CommentHistory:
    """A comment's events as a reconciler knows them: the fold of its first events up to
    ``known`` (kept from an earlier pass; none when ``known`` is 0), then the events after
    that, in order. ``CommentHistory(events)`` is a whole history."""

    __slots__ = ("base", "events", "known")

    def __init__(
        self, events: Sequence[Envelope], base: Truth | None = None, known: int = 0
    ) -> None:
        self.events = list(events)
        self.base = base
        self.known = known if base is not None else 0

    def __bool__(self) -> bool:
        return self.base is not None or bool(self.events)

    @property
    def last(self) -> int:
        """The position of its last event (0: none)."""
        return self.events[-1].position if self.events else self.known

    @property
    def commentable_id(self) -> str:
        if self.base is not None:
            return self.base.view.commentable_id
        return self.events[0].event.commentable_id

    def voters(self) -> frozenset[str]:
        """The users who voted in its events (not in the kept fold)."""
        return frozenset(
            e.event.user_id
            for e in self.events
            if isinstance(e.event, VoteCast | VoteChanged | VoteRetracted)
        )

    def has_event_at(self, position: int) -> bool:
        """Is one of its events at ``position``? (Before ``known`` only ``known`` is known.)"""
        return position == self.known > 0 or any(e.position == position for e in self.events)

    def truth_at(self, position: int | None = None) -> Truth | None:
        """The comment after its events at or below ``position`` (all of them by default);
        ``ValueError`` for a position before ``known`` (those events were folded away)."""
        if position is not None and position < self.known:
            raise ValueError(f"position {position} is before the kept fold at {self.known}")
        view = msgspec.structs.replace(self.base.view) if self.base is not None else None
        votes = dict(self.base.votes) if self.base is not None else {}
        for envelope in self.events:
            if position is not None and envelope.position > position:
                break
            view = evolve(view, envelope)
            event = envelope.event
            if isinstance(event, VoteCast | VoteChanged | VoteRetracted):
                if event.value:
                    votes[event.user_id] = event.value
                else:
                    votes.pop(event.user_id, None)
        return None if view is None else Truth(view, votes)


def truth_at(history: Sequence[Envelope], position: int | None = None) -> Truth | None:
    """The comment after its events at or below ``position`` (all of them by default)."""
    return CommentHistory(history).truth_at(position)


def judge(stored: StoredComment | None, history: CommentHistory, low_water: int) -> str | None:
    """How ``stored`` differs from the fold of ``history``; ``None`` when it does not.

    ``history.known`` must be at or below ``low_water``: a read model behind a fold that an
    earlier pass took from events it had applied is wrong.
    """
    if not history:
        return None
    last = history.last
    if stored is None:
        return f"missing (the log has it at position {last})" if last <= low_water else None
    if stored.position > last:
        return None  # moved on since the history was read
    if stored.position < history.known:
        return f"position is {stored.position} but should be {last}"
    truth = history.truth_at(stored.position)
    if truth is None or not history.has_event_at(stored.position):
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
    if stored.votes is not None:
        votes = truth.votes
        if stored.votes_of is not None:
            votes = {u: v for u, v in votes.items() if u in stored.votes_of}
            if stored.vote_count != len(truth.votes):
                wrong.append(f"{stored.vote_count} votes, should be {len(truth.votes)}")
        if stored.votes != votes:
            wrong.append(f"votes are {stored.votes}, should be {votes}")
    if stored.content is not None and stored.content != want.content:
        wrong.append("content differs")
    if stored.position < last <= low_water:
        wrong.append(f"position is {stored.position} but should be {last}")
    return ", ".join(wrong) or None
