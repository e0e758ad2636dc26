"""Calls made in one event-loop tick share one batch; each gets its own answer or error."""

import asyncio

import pytest

from kernel.coalesce import TickBatcher


async def test_calls_in_one_tick_share_a_batch_and_keep_their_order() -> None:
    batches: list[list[int]] = []

    async def square(keys: list[int]) -> list[int]:
        batches.append(keys)
        return [k * k for k in keys]

    batcher: TickBatcher[int, int] = TickBatcher(square)
    assert await asyncio.gather(*(batcher.get(n) for n in range(5))) == [0, 1, 4, 9, 16]
    assert batches == [[0, 1, 2, 3, 4]]
    assert await batcher.get(7) == 49 and batches[-1] == [7]


async def test_a_failing_batch_fails_each_caller_instead_of_hanging() -> None:
    async def broken(keys: list[int]) -> list[int]:
        raise ConnectionError("down")

    batcher: TickBatcher[int, int] = TickBatcher(broken)
    results = await asyncio.gather(*(batcher.get(n) for n in range(3)), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    with pytest.raises(ConnectionError):
        await batcher.get(1)
