"""Group commit coalesces concurrent commands and gives each its own outcome."""

import asyncio
from collections.abc import Sequence
from uuid import uuid4

import pytest

from command_api.deciders.vote import CastVote
from command_api.group_commit import CommandTimedOut, GroupCommitter, Overloaded, with_deadline
from command_api.work import Accepted, Outcome, WorkItem


def item(n: int) -> WorkItem:
    return WorkItem(command=CastVote(comment_id=uuid4(), user_id=f"u{n}", value=1), user_id=f"u{n}")


async def test_concurrent_commands_share_a_batch_and_keep_their_own_outcomes() -> None:
    batches: list[int] = []

    async def runner(items: Sequence[WorkItem]) -> list[Outcome]:
        batches.append(len(items))
        await asyncio.sleep(0.01)
        return [
            ValueError(i.user_id) if i.user_id == "u3" else Accepted(200, i.user_id.encode())
            for i in items
        ]

    committer = GroupCommitter(runner, max_wait_ms=20, max_batch=256, workers=1)
    await committer.start()
    try:
        outcomes = await asyncio.gather(*(committer.submit(item(n)) for n in range(10)))
    finally:
        await committer.stop()
    assert batches == [10]
    assert isinstance(outcomes[3], ValueError)
    assert [o.body for o in outcomes if isinstance(o, Accepted)] == [
        f"u{n}".encode() for n in range(10) if n != 3
    ]


async def test_a_batch_never_exceeds_its_bound() -> None:
    batches: list[int] = []

    async def runner(items: Sequence[WorkItem]) -> list[Outcome]:
        batches.append(len(items))
        return [Accepted(200, b"") for _ in items]

    committer = GroupCommitter(runner, max_wait_ms=50, max_batch=4, workers=1)
    await committer.start()
    try:
        await asyncio.gather(*(committer.submit(item(n)) for n in range(10)))
    finally:
        await committer.stop()
    assert max(batches) <= 4 and sum(batches) == 10


async def test_a_runner_that_raises_fails_each_command_instead_of_hanging() -> None:
    async def runner(items: Sequence[WorkItem]) -> list[Outcome]:
        raise RuntimeError("boom")

    committer = GroupCommitter(runner, max_wait_ms=1, max_batch=8, workers=1)
    await committer.start()
    try:
        outcomes = await asyncio.gather(*(committer.submit(item(n)) for n in range(3)))
    finally:
        await committer.stop()
    assert all(isinstance(o, RuntimeError) for o in outcomes)


async def test_a_full_queue_refuses_at_once_instead_of_queuing() -> None:
    release = asyncio.Event()

    async def stalled(items: Sequence[WorkItem]) -> list[Outcome]:
        await release.wait()  # the database does not answer
        return [Accepted(200, b"ok") for _ in items]

    committer = GroupCommitter(stalled, max_wait_ms=0, max_batch=1, workers=1, max_queue=3)
    await committer.start()
    try:
        first = asyncio.create_task(committer.submit(item(0)))
        await asyncio.sleep(0.01)  # taken by the worker, which now waits
        queued = [asyncio.create_task(committer.submit(item(n))) for n in range(1, 4)]
        await asyncio.sleep(0.01)
        with pytest.raises(Overloaded):
            await committer.submit(item(9))
        release.set()
        assert all(isinstance(o, Accepted) for o in await asyncio.gather(first, *queued))
    finally:
        await committer.stop()


async def test_a_command_still_queued_at_its_deadline_is_dropped_unrun() -> None:
    ran: list[str] = []
    release = asyncio.Event()

    async def slow(items: Sequence[WorkItem]) -> list[Outcome]:
        ran.extend(i.user_id for i in items)
        await release.wait()
        return [Accepted(200, b"ok") for _ in items]

    committer = GroupCommitter(slow, max_wait_ms=0, max_batch=1, workers=1, deadline_ms=50)
    await committer.start()
    try:
        first = asyncio.create_task(committer.submit(item(0)))
        await asyncio.sleep(0.01)
        late = asyncio.create_task(committer.submit(item(1)))
        await asyncio.sleep(0.1)  # past its deadline while the first batch holds the worker
        release.set()
        assert isinstance(await first, Accepted)
        with pytest.raises(Overloaded):
            await late
    finally:
        await committer.stop()
    assert ran == ["u0"]  # the late one never reached the database


async def test_a_caller_waits_no_longer_than_its_deadline() -> None:
    async def never(item: WorkItem) -> Outcome:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    bounded = with_deadline(never, 0.05)
    with pytest.raises(CommandTimedOut, match="Idempotency-Key"):
        await bounded(item(1))
