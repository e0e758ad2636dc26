"""A long-running process never goes on missing one of its jobs, and closing a Kafka client
never ends the task that closes it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from event_store.messaging import close_client
from tally.bootstrap import JobEnded, _until_one_fails


class ClientWhoseStopLeaksCancellation:
    """What aiokafka does when its fetcher has pending tasks: cancel them, then await them."""

    async def stop(self) -> None:
        task = asyncio.ensure_future(asyncio.sleep(10))
        await asyncio.sleep(0)
        task.cancel()
        await task  # raises CancelledError into the caller


async def test_closing_a_client_whose_stop_leaks_a_cancellation_returns_normally() -> None:
    client: Any = ClientWhoseStopLeaksCancellation()
    await close_client(client)  # no CancelledError: the caller's task goes on
    assert not asyncio.current_task().cancelling()  # type: ignore[union-attr]


async def test_closing_a_client_still_lets_a_real_cancellation_through() -> None:
    class Slow:
        async def stop(self) -> None:
            await asyncio.sleep(10)

    task = asyncio.ensure_future(close_client(Slow()))  # type: ignore[arg-type]
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_job_cancelled_from_within_stops_the_others_and_fails_the_process() -> None:
    stop = asyncio.Event()
    others_saw_stop = asyncio.Event()

    async def dies_of_a_leaked_cancellation() -> None:
        await ClientWhoseStopLeaksCancellation().stop()

    async def runs_until_stopped() -> None:
        await stop.wait()
        others_saw_stop.set()

    with pytest.raises(JobEnded, match="cancelled"):
        await _until_one_fails([dies_of_a_leaked_cancellation(), runs_until_stopped()], stop)
    assert others_saw_stop.is_set()


async def test_a_job_that_returns_early_fails_the_process_and_a_stop_does_not() -> None:
    stop = asyncio.Event()

    async def returns() -> None:
        return None

    with pytest.raises(JobEnded, match="returned early"):
        await _until_one_fails([returns(), stop.wait()], stop)
    stop.clear()

    async def stops_everything() -> None:
        stop.set()

    await _until_one_fails([stops_everything(), stop.wait()], stop)  # a stop is no failure
