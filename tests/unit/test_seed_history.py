"""The seed history is deterministic and every event is one the deciders would allow."""

from event_store.seed import SeedPlan, history
from schemas.events import CommentPosted, VoteCast, VoteChanged, VoteRetracted


def test_the_same_seed_gives_the_same_history() -> None:
    plan = SeedPlan(events=500, comments=40, users=30, seed=3)
    first = [(p.stream_id, p.stream_version, p.event) for p in history(plan)]
    assert first == [(p.stream_id, p.stream_version, p.event) for p in history(plan)]
    assert first != [
        (p.stream_id, p.stream_version, p.event)
        for p in history(SeedPlan(events=500, comments=40, users=30, seed=4))
    ]


def test_votes_chain_their_previous_values_and_versions() -> None:
    plan = SeedPlan(events=3000, comments=50, users=40, seed=5)
    events = list(history(plan))
    assert len(events) == 3000
    posted = {p.event.comment_id for p in events if isinstance(p.event, CommentPosted)}
    streams: dict[str, tuple[int, int]] = {}
    kinds = set()
    for pending in events:
        event = pending.event
        if isinstance(event, CommentPosted):
            continue
        assert isinstance(event, VoteCast | VoteChanged | VoteRetracted)
        assert event.comment_id in posted
        value, version = streams.get(pending.stream_id, (0, 0))
        assert (event.previous, pending.stream_version) == (value, version + 1)
        assert event.value != event.previous
        kinds.add(type(event))
        streams[pending.stream_id] = (event.value, pending.stream_version)
    assert kinds == {VoteCast, VoteChanged, VoteRetracted}
