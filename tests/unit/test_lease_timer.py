"""The relay lease's clock: renew often, act only inside the safe part of the lease."""

from event_store.lease import LeaseTimer


def test_a_fresh_lease_may_be_acted_on_and_is_renewed_every_quarter() -> None:
    timer = LeaseTimer(10.0)
    timer.renewing(100.0)
    assert timer.may_act(100.0) and not timer.should_renew(101.0)
    assert timer.should_renew(102.5)


def test_past_the_safe_part_a_leader_must_not_act_before_renewing() -> None:
    timer = LeaseTimer(10.0)  # margin: a quarter of the lease
    timer.renewing(100.0)
    assert timer.may_act(107.4)
    assert not timer.may_act(107.5)  # a paused process waking up here stops before acting


def test_a_lost_lease_allows_nothing() -> None:
    timer = LeaseTimer(10.0)
    timer.renewing(100.0)
    timer.lost()
    assert not timer.may_act(100.1) and timer.should_renew(100.1)
