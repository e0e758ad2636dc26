"""What a read model holds for a comment, judged against the fold of the comment's history."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from projectors.judging import CommentHistory, StoredComment, judge, truth_at
from schemas.envelope import Envelope
from schemas.events import CommentPosted, Event, VoteCast, VoteChanged

COMMENT = uuid.uuid4()


def envelope(position: int, event: Event) -> Envelope:
    return Envelope(
        event_id=uuid.uuid4(),
        stream_id="s",
        stream_version=position,
        position=position,
        occurred_at=datetime.now(UTC),
        event=event,
    )


HISTORY = [
    envelope(3, CommentPosted(comment_id=COMMENT, commentable_id="p", author_id="a", content="x")),
    envelope(7, VoteCast(comment_id=COMMENT, commentable_id="p", user_id="u", value=1, previous=0)),
    envelope(9, VoteCast(comment_id=COMMENT, commentable_id="p", user_id="v", value=1, previous=0)),
    envelope(
        12, VoteChanged(comment_id=COMMENT, commentable_id="p", user_id="u", value=-1, previous=1)
    ),
]
WHOLE = CommentHistory(HISTORY)


def stored(position: int, up: int, down: int, votes: dict[str, int] | None = None) -> StoredComment:
    return StoredComment(position=position, up=up, down=down, votes=votes)


def test_a_comment_that_equals_its_fold_is_fine() -> None:
    assert judge(stored(12, 1, 1, {"u": -1, "v": 1}), WHOLE, low_water=12) is None


def test_a_comment_behind_is_judged_at_its_own_position() -> None:
    # It applied up to 9: two up-votes then. Right for its position, and not yet due for 12.
    assert judge(stored(9, 2, 0), WHOLE, low_water=10) is None


def test_a_comment_behind_what_its_projection_claims_has_lost_events() -> None:
    assert judge(stored(9, 2, 0), WHOLE, low_water=12) == "position is 9 but should be 12"


def test_wrong_counts_at_the_right_position_are_named() -> None:
    assert judge(stored(12, 2, 0), WHOLE, low_water=12) == (
        "up is 2 but should be 1, down is 0 but should be 1"
    )


def test_a_missing_comment_is_wrong_only_once_it_is_due() -> None:
    assert judge(None, WHOLE, low_water=11) is None
    assert judge(None, WHOLE, low_water=12) == "missing (the log has it at position 12)"


def test_a_comment_that_moved_on_since_the_history_was_read_is_not_judged() -> None:
    assert judge(stored(15, 0, 0), WHOLE, low_water=15) is None


@given(cut=st.integers(0, 4), skip=st.integers(0, 3))
def test_a_fold_with_an_event_left_out_is_always_caught(cut: int, skip: int) -> None:
    """Stored = the fold of the history up to a point, minus one of its events."""
    kept = HISTORY[: max(cut, skip + 1)]
    applied = [e for n, e in enumerate(kept) if n != skip or n == 0]
    truth = truth_at(applied)
    assert truth is not None
    view = truth.view
    wrong = stored(kept[-1].position, view.up, view.down, truth.votes)
    verdict = judge(wrong, WHOLE, low_water=12)
    if applied == kept:
        assert verdict is None or "position" in verdict
    else:
        assert verdict is not None
