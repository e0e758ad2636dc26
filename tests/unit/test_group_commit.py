"""Group commit coalesces concurrent commands and gives each its own outcome."""

import asyncio
from collections.abc import Sequence
from uuid import uuid4

from command_api.deciders.vote import CastVote
from command_api.group_commit import GroupCommitter
from command_api.unit_of_work import Accepted, Outcome, WorkItem


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
