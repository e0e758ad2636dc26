"""The pure fold and the ranking formulas."""

from hypothesis import given
from hypothesis import strategies as st

from projectors import ranking
from projectors.fold import fold, user_votes
from schemas.envelope import Envelope
from tests.histories import deliveries, histories


@given(st.data())
def test_folding_a_messy_delivery_equals_folding_the_history(data: st.DataObject) -> None:
    history: list[Envelope] = data.draw(histories())
    batches = data.draw(deliveries(history))
    delivered = [e for batch in batches for e in batch]
    assert fold(delivered) == fold(history)
    assert user_votes(delivered) == user_votes(history)


@given(histories())
def test_a_comments_score_is_the_sum_of_its_latest_votes(history: list[Envelope]) -> None:
    views = fold(history)
    votes = user_votes(history)
    for comment_id, view in views.items():
        mine = [v for (c, _), v in votes.items() if c == comment_id]
        assert view.up == mine.count(1) and view.down == mine.count(-1)
        assert view.score == sum(mine)


def test_best_ranks_more_evidence_higher_at_the_same_share() -> None:
    assert ranking.best(10, 0) > ranking.best(1, 0) > ranking.best(0, 0) == 0.0
    assert 0 < ranking.best(60, 40) < 0.6


def test_controversial_favours_many_evenly_split_votes() -> None:
    assert ranking.controversial(50, 50) > ranking.controversial(90, 10) > 0
    assert ranking.controversial(10, 0) == 0.0


def test_hot_decays_with_age_twelve_and_a_half_hours_per_tenfold_score() -> None:
    now_ms = 1_800_000_000_000
    older = now_ms - 45_000 * 1000
    assert abs(ranking.hot(10, 0, older) - ranking.hot(1, 0, now_ms)) < 1e-9
    assert ranking.hot(0, 5, now_ms) < ranking.hot(0, 0, now_ms) < ranking.hot(5, 0, now_ms)
