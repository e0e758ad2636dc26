"""Searches that must see their own writes share refreshes: one at a time, at most one per
interval, and each reader is served by a refresh that started after it asked."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from query_api.refresher import Refresher


async def test_many_readers_share_few_refreshes_each_started_after_its_reader_asked() -> None:
    starts: list[float] = []

    async def refresh() -> None:
        starts.append(time.monotonic())
        await asyncio.sleep(0.01)

    refresher = Refresher(refresh, min_interval=0.05)
    served: list[tuple[float, float]] = []

    async def reader(delay: float) -> None:
        await asyncio.sleep(delay)
        since = time.monotonic()
        await refresher.covering(since)
        covering = max(s for s in starts if s >= since)
        served.append((since, covering))

    await asyncio.gather(*(reader(n * 0.002) for n in range(200)))  # 200 readers over 0.4 s
    assert len(served) == 200
    assert all(start >= since for since, start in served)
    assert len(starts) <= 0.4 / 0.05 + 2  # not one per reader
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(gap >= 0.049 for gap in gaps), gaps


async def test_a_failed_refresh_fails_its_readers_and_the_next_one_tries_again() -> None:
    calls = 0

    async def refresh() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("the engine is away")

    refresher = Refresher(refresh, min_interval=0)
    with pytest.raises(ConnectionError):
        await refresher.covering(time.monotonic())
    await refresher.covering(time.monotonic())
    assert calls == 2
