"""Planning a batch: commands chain on the state left by earlier ones; errors stay local."""

from datetime import UTC, datetime
from uuid import UUID, uuid4

from hypothesis import given, settings
from hypothesis import strategies as st

from command_api.deciders.comment import CommentState, DeleteComment, EditComment, PostComment
from command_api.deciders.errors import CommentIsDeleted, CommentNotFound, NotTheAuthor
from command_api.deciders.vote import CastVote
from command_api.planning import BatchPlan, Command, CommandPlan, plan_batch
from schemas.api import VoteRecorded

NOW = datetime(2026, 1, 1, tzinfo=UTC)
CID = UUID(int=1)
LIVE = CommentState(exists=True, commentable_id="p", author_id="alice", content="hi", version=1)


def test_two_votes_of_one_user_in_one_batch_chain_their_versions() -> None:
    plan = plan_batch(
        [
            CastVote(comment_id=CID, user_id="bob", value=1),
            CastVote(comment_id=CID, user_id="bob", value=-1),
        ],
        {CID: LIVE},
        {},
        NOW,
    )
    first, second = plan.outcomes
    assert isinstance(first, CommandPlan) and isinstance(second, CommandPlan)
    assert [e.stream_version for e in first.events + second.events] == [1, 2]
    assert second.reply == VoteRecorded(comment_id=CID, value=-1, previous=1, position=0)
    assert plan.votes[(CID, "bob")].version == 2


def test_no_vote_is_accepted_after_a_delete_earlier_in_the_same_batch() -> None:
    plan = plan_batch(
        [
            CastVote(comment_id=CID, user_id="bob", value=1),
            DeleteComment(comment_id=CID, user_id="alice"),
            CastVote(comment_id=CID, user_id="bob", value=-1),
        ],
        {CID: LIVE},
        {},
        NOW,
    )
    voted, deleted, refused = plan.outcomes
    assert isinstance(voted, CommandPlan) and isinstance(deleted, CommandPlan)
    assert isinstance(refused, CommentIsDeleted)
    assert plan.votes[(CID, "bob")].value == 1


def test_a_failing_command_does_not_fail_its_batch() -> None:
    plan = plan_batch(
        [
            EditComment(comment_id=CID, user_id="mallory", content="x"),
            CastVote(comment_id=uuid4(), user_id="bob", value=1),
            CastVote(comment_id=CID, user_id="bob", value=1),
        ],
        {CID: LIVE},
        {},
        NOW,
    )
    assert isinstance(plan.outcomes[0], NotTheAuthor)
    assert isinstance(plan.outcomes[1], CommentNotFound)
    assert isinstance(plan.outcomes[2], CommandPlan) and len(plan.outcomes[2].events) == 1


def test_a_reply_to_a_comment_posted_in_the_same_batch_is_accepted() -> None:
    parent, child = uuid4(), uuid4()
    plan = plan_batch(
        [
            PostComment(comment_id=parent, commentable_id="p", author_id="a", content="x"),
            PostComment(
                comment_id=child, commentable_id="p", author_id="b", content="y", parent_id=parent
            ),
        ],
        {},
        {},
        NOW,
    )
    assert all(isinstance(o, CommandPlan) for o in plan.outcomes)
    assert set(plan.comments) == {parent, child}
    # A reply sits one level below its parent, and its thread is named in its events.
    assert (plan.comments[parent].depth, plan.comments[child].depth) == (0, 1)
    reply = plan.outcomes[1]
    assert isinstance(reply, CommandPlan)
    assert reply.events[0].event.parent_id == parent


def _run(batches: list[list[Command]]) -> list[tuple[str, int, int, int]]:
    """Plan batch after batch, saving vote state in between as the database would."""
    table: dict[tuple[UUID, str], tuple[int, int]] = {}
    events = []
    for batch in batches:
        plan: BatchPlan = plan_batch(batch, {CID: LIVE}, dict(table), NOW)
        for key, state in plan.votes.items():
            table[key] = (state.value, state.version)
        for outcome in plan.outcomes:
            assert isinstance(outcome, CommandPlan)
            events += [
                (p.stream_id, p.stream_version, p.event.value, p.event.previous)  # type: ignore[union-attr]
                for p in outcome.events
            ]
    return events


votes = st.lists(
    st.builds(
        lambda u, v: CastVote(comment_id=CID, user_id=u, value=v),
        st.sampled_from(["a", "b"]),
        st.sampled_from([-1, 0, 1]),
    ),
    max_size=40,
)


@given(votes, st.lists(st.integers(1, 8), max_size=40))
@settings(max_examples=200)
def test_batch_boundaries_never_change_the_events(
    commands: list[Command], sizes: list[int]
) -> None:
    batches, rest = [], list(commands)
    for size in sizes:
        if rest:
            batches.append(rest[:size])
            rest = rest[size:]
    if rest:
        batches.append(rest)
    assert _run(batches) == _run([[c] for c in commands])
