"""Hypothesis strategies: valid event histories and messy deliveries of them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

from hypothesis import strategies as st

from command_api.deciders import comment, vote
from command_api.deciders.comment import CommentState, DeleteComment, EditComment, PostComment
from command_api.deciders.errors import DomainError
from command_api.deciders.vote import CastVote, VoteState
from schemas.envelope import Envelope
from schemas.events import Event

USERS = ["ann", "bob", "cy", "dee"]
START = datetime(2026, 11, 1, tzinfo=UTC)


def build_history(
    actions: list[tuple[int, int, int, int]], commentables: list[str]
) -> list[Envelope]:
    """Turn (kind, comment, user, value) actions into the events the deciders allow."""
    comments: dict[int, tuple[UUID, str]] = {}
    states: dict[UUID, CommentState] = {}
    votes: dict[tuple[UUID, str], VoteState] = {}
    events: list[tuple[str, int, Event]] = []
    versions: dict[str, int] = {}
    for kind, slot, user_index, value in actions:
        user = USERS[user_index]
        try:
            if kind == 0 or slot not in comments:
                if slot in comments:
                    continue
                comment_id = uuid4()
                comments[slot] = (comment_id, commentables[slot % len(commentables)])
                post = PostComment(
                    comment_id=comment_id,
                    commentable_id=comments[slot][1],
                    author_id=user,
                    content=f"words {slot} {user}",
                )
                new = comment.decide(post, comment.initial_state)
                stream = f"comment-{comment_id}"
            elif kind == 1:
                comment_id = comments[slot][0]
                cast = CastVote(comment_id=comment_id, user_id=user, value=value)  # type: ignore[arg-type]
                state = votes.get((comment_id, user)) or vote.initial_state(states[comment_id])
                state = VoteState(
                    comment=states[comment_id], value=state.value, version=state.version
                )
                new = vote.decide(cast, state)  # type: ignore[assignment]
                for event in new:
                    state = vote.evolve(state, event)  # type: ignore[arg-type]
                votes[(comment_id, user)] = state
                stream = f"vote-{comment_id}-{user}"
            else:
                comment_id = comments[slot][0]
                author = states[comment_id].author_id
                change = (
                    EditComment(comment_id=comment_id, user_id=author, content=f"edited {value}")
                    if kind == 2
                    else DeleteComment(comment_id=comment_id, user_id=author)
                )
                new = comment.decide(change, states[comment_id])
                stream = f"comment-{comment_id}"
        except DomainError:
            continue
        for event in new:
            if stream.startswith("comment-"):
                states[event.comment_id] = comment.evolve(
                    states.get(event.comment_id, comment.initial_state),
                    event,  # type: ignore[arg-type]
                )
            versions[stream] = versions.get(stream, 0) + 1
            events.append((stream, versions[stream], event))
    return [
        Envelope(
            event_id=uuid4(),
            stream_id=stream,
            stream_version=version,
            position=position,
            occurred_at=START + timedelta(minutes=position),
            event=event,
        )
        for position, (stream, version, event) in enumerate(events, start=1)
    ]


actions = st.lists(
    st.tuples(
        st.sampled_from([0, 1, 1, 1, 1, 2, 3]),  # post, vote (often), edit, delete
        st.integers(0, 5),
        st.integers(0, len(USERS) - 1),
        st.sampled_from([-1, 0, 1]),
    ),
    min_size=1,
    max_size=60,
)


@st.composite
def histories(draw: st.DrawFn) -> list[Envelope]:
    """A valid history over two commentables."""
    tag = uuid4().hex[:8]
    return build_history(draw(actions), [f"a-{tag}", f"b-{tag}"])


@st.composite
def deliveries(draw: st.DrawFn, history: list[Envelope]) -> list[list[Envelope]]:
    """Batches that deliver ``history`` at least once, in order, with duplicates and rewinds."""
    batches: list[list[Envelope]] = []
    cursor = 0
    while cursor < len(history):
        size = draw(st.integers(1, 8))
        batch = list(history[cursor : cursor + size])
        if batch and draw(st.booleans()):  # a duplicate, delivered after its original
            original = draw(st.integers(0, len(batch) - 1))
            batch.insert(draw(st.integers(original + 1, len(batch))), batch[original])
        batches.append(batch)
        cursor += size
        if draw(st.integers(0, 4)) == 0:  # redelivery from an older offset
            cursor = max(0, cursor - draw(st.integers(1, 10)))
            batches.append(list(history[cursor : cursor + 1]))
            cursor += 1
    return batches
