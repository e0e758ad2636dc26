"""The vote decider, as Given / When / Then, plus hypothesis properties over any command mix."""

from uuid import UUID, uuid4

import pytest
from hypothesis import given as for_all
from hypothesis import strategies as st

from command_api.deciders import vote
from command_api.deciders.comment import CommentState
from command_api.deciders.errors import CommentIsDeleted, CommentNotFound
from command_api.deciders.vote import CastVote, RetractVote, VoteCommand, VoteState
from schemas.events import VoteCast, VoteChanged, VoteRetracted

CID = uuid4()
LIVE = CommentState(exists=True, commentable_id="post-1", author_id="alice", content="hi")


def state(value: int = 0, version: int = 0, comment: CommentState = LIVE) -> VoteState:
    return VoteState(comment=comment, value=value, version=version)  # type: ignore[arg-type]


def test_a_first_upvote_is_cast_from_zero() -> None:
    assert vote.decide(CastVote(comment_id=CID, user_id="bob", value=1), state()) == [
        VoteCast(
            comment_id=CID,
            commentable_id="post-1",
            comment_author_id="alice",
            user_id="bob",
            value=1,
            previous=0,
        )
    ]


def test_changing_a_vote_moves_the_score_by_two() -> None:
    [event] = vote.decide(CastVote(comment_id=CID, user_id="bob", value=-1), state(1, 1))
    assert isinstance(event, VoteChanged)
    assert event.delta == -2


def test_retracting_records_the_previous_value() -> None:
    [event] = vote.decide(RetractVote(comment_id=CID, user_id="bob"), state(-1, 1))
    assert event == VoteRetracted(
        comment_id=CID,
        commentable_id="post-1",
        comment_author_id="alice",
        user_id="bob",
        value=0,
        previous=-1,
    )


def test_setting_the_same_value_twice_appends_nothing() -> None:
    assert vote.decide(CastVote(comment_id=CID, user_id="bob", value=1), state(1, 1)) == []
    assert vote.decide(RetractVote(comment_id=CID, user_id="bob"), state()) == []


def test_no_vote_on_a_deleted_or_unknown_comment() -> None:
    with pytest.raises(CommentIsDeleted):
        vote.decide(
            CastVote(comment_id=CID, user_id="bob", value=1),
            state(comment=CommentState(exists=True, deleted=True)),
        )
    with pytest.raises(CommentNotFound):
        vote.decide(CastVote(comment_id=CID, user_id="bob", value=1), state(comment=CommentState()))


COMMENTS = [UUID(int=n) for n in range(3)]
commands = st.lists(
    st.builds(
        lambda c, u, v: (
            CastVote(comment_id=c, user_id=u, value=v)
            if v is not None
            else RetractVote(comment_id=c, user_id=u)
        ),
        st.sampled_from(COMMENTS),
        st.sampled_from(["ann", "bob", "cy"]),
        st.sampled_from([-1, 0, 1, None]),
    ),
    max_size=60,
)


@for_all(commands)
def test_any_command_sequence_folds_to_one_consistent_vote_per_user_and_comment(
    sequence: list[VoteCommand],
) -> None:
    streams: dict[tuple[UUID, str], VoteState] = {}
    deltas: dict[tuple[UUID, str], int] = {}
    last_asked: dict[tuple[UUID, str], int] = {}
    for command in sequence:
        key = (command.comment_id, command.user_id)
        before = streams.get(key, vote.initial_state(LIVE))
        events = vote.decide(command, before)
        after = before
        for event in events:
            assert event.previous == after.value  # previous is always right
            assert isinstance(event, VoteCast) == (event.previous == 0)
            assert isinstance(event, VoteRetracted) == (event.value == 0)
            after = vote.evolve(after, event)
            deltas[key] = deltas.get(key, 0) + event.delta
        streams[key] = after
        last_asked[key] = command.value if isinstance(command, CastVote) else 0
        assert len(events) == (0 if last_asked[key] == before.value else 1)
    for key, final in streams.items():
        assert final.value == last_asked[key]
        assert deltas.get(key, 0) == final.value  # the sum of the deltas is the final vote
