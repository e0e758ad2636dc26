"""A kept fold plus the events after it judges a read model as the whole history does."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from projectors.judging import CommentHistory, StoredComment, judge, truth_at
from projectors.kept_truths import KeptTruths
from schemas.envelope import Envelope
from schemas.events import (
    CommentDeleted,
    CommentEdited,
    CommentPosted,
    Event,
    VoteCast,
    VoteChanged,
    VoteRetracted,
)
from tests.unit.test_judging import envelope

COMMENT = uuid.uuid4()
USERS = ["u", "v", "w", "x"]


@st.composite
def histories(draw: st.DrawFn) -> list[Envelope]:
    """A comment's history as the deciders write it: posted, then votes, edits, a delete."""
    position = draw(st.integers(1, 5))
    events = [
        envelope(
            position,
            CommentPosted(comment_id=COMMENT, commentable_id="p", author_id="a", content="x"),
        )
    ]
    votes: dict[str, int] = {}
    for _ in range(draw(st.integers(0, 25))):
        position += draw(st.integers(1, 3))  # other comments' events between
        kind = draw(st.sampled_from(["vote", "vote", "vote", "edit", "delete"]))
        if kind == "edit":
            event: Event = CommentEdited(
                comment_id=COMMENT, commentable_id="p", author_id="a", content="y"
            )
        elif kind == "delete":
            event = CommentDeleted(comment_id=COMMENT, commentable_id="p", author_id="a")
        else:
            user = draw(st.sampled_from(USERS))
            previous = votes.get(user, 0)
            value = draw(st.sampled_from([v for v in (-1, 0, 1) if v != previous]))
            votes[user] = value
            common = dict(comment_id=COMMENT, commentable_id="p", user_id=user, value=value)
            if previous == 0:
                event = VoteCast(**common, previous=0)
            elif value == 0:
                event = VoteRetracted(**common, previous=previous)
            else:
                event = VoteChanged(**common, previous=previous)
        events.append(envelope(position, event))
    return events


def stored_at(history: list[Envelope], position: int, drift: str) -> StoredComment:
    """What a read model would hold at ``position``, with one ``drift``."""
    truth = truth_at(history, position)
    assert truth is not None
    up, down, votes = truth.view.up, truth.view.down, dict(truth.votes)
    if drift == "up":
        up += 1
    elif drift == "vote" and votes:
        user = max(votes)
        votes[user] = -votes[user]
    elif drift == "lost-vote" and votes:
        votes.pop(max(votes))
    return StoredComment(
        position=position, up=up, down=down, deleted=truth.view.deleted, votes=votes
    )


def partial(stored: StoredComment, history: CommentHistory) -> StoredComment:
    """``stored`` as the Redis projection reads it on top of a kept fold: only the new voters'
    votes, and the count of all."""
    assert stored.votes is not None
    voters = history.voters()
    return StoredComment(
        position=stored.position,
        up=stored.up,
        down=stored.down,
        deleted=stored.deleted,
        votes={u: v for u, v in stored.votes.items() if u in voters},
        votes_of=voters,
        vote_count=len(stored.votes),
    )


@given(history=histories(), data=st.data())
def test_a_kept_fold_and_the_events_after_it_make_the_whole_fold(
    history: list[Envelope], data: st.DataObject
) -> None:
    cut = data.draw(st.integers(1, len(history)))
    known = history[cut - 1].position
    kept = CommentHistory(history[cut:], truth_at(history[:cut]), known)
    for envelope_ in history[cut - 1 :]:
        assert kept.truth_at(envelope_.position) == truth_at(history, envelope_.position)
    assert kept.truth_at() == truth_at(history)
    assert kept.last == history[-1].position


@given(
    history=histories(),
    data=st.data(),
    drift=st.sampled_from(["none", "up", "vote", "lost-vote"]),
)
def test_judging_on_a_kept_fold_agrees_with_the_whole_history(
    history: list[Envelope], data: st.DataObject, drift: str
) -> None:
    cut = data.draw(st.integers(1, len(history)))
    known = history[cut - 1].position
    at = data.draw(st.sampled_from([e.position for e in history[cut - 1 :]]))
    low_water = data.draw(st.integers(known, history[-1].position + 2))
    kept = CommentHistory(history[cut:], truth_at(history[:cut]), known)
    whole = stored_at(history, at, drift)
    verdict = judge(whole, CommentHistory(history), low_water)
    on_kept = judge(whole, kept, low_water)
    assert (verdict is None) == (on_kept is None), (verdict, on_kept)
    # The Redis projection's partial read: a drifted vote of a user with no new event is
    # seen only in the count (a flipped one not at all, until the fold is read whole again).
    seen = judge(partial(whole, kept), kept, low_water)
    if verdict is None:
        assert seen is None
    elif drift == "vote" and max(whole.votes or {"": 0}) not in kept.voters():
        pass  # the flipped vote's user has no new event
    else:
        assert seen is not None


def test_a_read_model_behind_a_kept_fold_is_wrong() -> None:
    posted = CommentPosted(comment_id=COMMENT, commentable_id="p", author_id="a", content="x")
    vote = VoteCast(comment_id=COMMENT, commentable_id="p", user_id="u", value=1, previous=0)
    history = [envelope(3, posted), envelope(8, vote)]
    kept = CommentHistory([], truth_at(history), 8)
    behind = StoredComment(position=3, up=0, down=0, votes={})
    assert judge(behind, kept, low_water=8) == "position is 3 but should be 8"


def test_kept_folds_are_bounded_by_votes_and_by_age() -> None:
    now = [0.0]
    kept = KeptTruths(max_votes=6, max_age=10, clock=lambda: now[0])
    posted = CommentPosted(comment_id=COMMENT, commentable_id="p", author_id="a", content="x")
    votes = [
        envelope(
            2 + n, VoteCast(comment_id=COMMENT, commentable_id="p", user_id=u, value=1, previous=0)
        )
        for n, u in enumerate(USERS)
    ]
    history = CommentHistory([envelope(1, posted), *votes])
    kept.keep("a", history, low_water=3)  # up to the first vote at or below 3
    assert kept.positions(["a", "b"]) == {"a": 3}
    kept.keep("b", history, low_water=99)  # 1 + 4 votes: the two no longer fit in 6
    assert kept.positions(["a", "b"]) == {"b": 5}
    tail = kept.history("b", [])
    assert tail.known == 5 and tail.truth_at() == history.truth_at()
    now[0] = 11
    assert kept.positions(["b"]) == {}  # too old: read whole again
    assert len(kept) == 0
