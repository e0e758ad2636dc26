"""Live streams are capped per address block and per user, and reconnects are budgeted."""

from __future__ import annotations

from typing import Any

import pytest

from query_api.live_hub import LiveHub, ReconnectBudget, TooManyStreams


def hub(**options: Any) -> LiveHub:
    return LiveHub(None, max_streams=100, max_per_client=3, **options)  # type: ignore[arg-type]


async def test_streams_are_capped_per_address_block_and_per_user() -> None:
    live = hub(max_per_user=2, reconnects=ReconnectBudget(burst=100))
    held = [live.admit("2001:db8::/64") for _ in range(3)]
    with pytest.raises(TooManyStreams, match="per client"):
        live.admit("2001:db8::/64")
    live._release(held[0])
    live.admit("2001:db8::/64")
    live.admit("192.0.2.1", "alice")
    live.admit("192.0.2.2", "alice")
    with pytest.raises(TooManyStreams, match="per user"):
        live.admit("192.0.2.3", "alice")  # another address, the same user


def test_a_reconnect_storm_is_told_when_to_come_back() -> None:
    now = [0.0]
    budget = ReconnectBudget(burst=5, per_second=1.0, clock=lambda: now[0])
    assert [budget.take("b") for _ in range(5)] == [0.0] * 5
    assert budget.take("b") == pytest.approx(1.0)
    assert budget.take("other") == 0.0  # each block on its own
    now[0] = 1.0
    assert budget.take("b") == 0.0  # one more per second
    assert budget.take("b") > 0


async def test_a_refused_reconnect_keeps_no_slot() -> None:
    live = hub(reconnects=ReconnectBudget(burst=1, per_second=0.001))
    first = live.admit("192.0.2.9")
    live._release(first)
    with pytest.raises(TooManyStreams, match="reconnecting too often") as refused:
        live.admit("192.0.2.9")
    assert refused.value.retry_after >= 1
    assert live._open == 0
