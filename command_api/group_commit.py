"""Group commit: coalesce concurrent commands into one transaction.

A worker takes the first queued command, waits until ``max_wait`` has passed or ``max_batch``
commands are queued, and runs what is queued together: one lock on the log head and one fsync
for the lot. Several workers run so that one batch collects while another commits. The wait
costs one timer per batch, never one per command.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

from prometheus_client import Histogram

from command_api.unit_of_work import Outcome, WorkItem

BatchRunner = Callable[[Sequence[WorkItem]], Awaitable[list[Outcome]]]

BATCH_SIZE = Histogram(
    "tally_group_commit_batch_size",
    "Commands per group-commit transaction",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
BATCH_SECONDS = Histogram(
    "tally_group_commit_batch_seconds",
    "Time to run one group-commit transaction, from first statement to commit",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
QUEUE_WAIT = Histogram(
    "tally_group_commit_queue_seconds",
    "Time a command waits before its batch starts",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
)


class GroupCommitter:
    """Queue commands and run them in batches through ``runner``."""

    def __init__(
        self, runner: BatchRunner, max_wait_ms: float, max_batch: int, workers: int = 3
    ) -> None:
        self._runner = runner
        self._max_wait = max_wait_ms / 1000
        self._max_batch = max_batch
        self._workers = workers
        self._queue: asyncio.Queue[tuple[WorkItem, asyncio.Future[Outcome], float]] = (
            asyncio.Queue()
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._collecting: set[asyncio.Future[None]] = set()

    async def start(self) -> None:
        """Start the workers (call from the app's lifespan)."""
        self._tasks = [
            asyncio.create_task(self._work(), name=f"group-commit-{n}")
            for n in range(self._workers)
        ]

    async def stop(self) -> None:
        """Stop the workers; commands still queued fail rather than hang."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        while not self._queue.empty():
            _, future, _ = self._queue.get_nowait()
            if not future.done():
                future.set_exception(RuntimeError("the command API is shutting down"))

    async def submit(self, item: WorkItem) -> Outcome:
        """Queue ``item`` and wait for its own outcome."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        self._queue.put_nowait((item, future, loop.time()))
        if self._collecting and self._queue.qsize() + 1 >= self._max_batch:
            for waiting in self._collecting:
                if not waiting.done():
                    waiting.set_result(None)
        return await future

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            if self._max_wait > 0 and self._queue.qsize() + 1 < self._max_batch:
                await self._collect(loop)
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            started = loop.time()
            for _, _, queued_at in batch:
                QUEUE_WAIT.observe(started - queued_at)
            BATCH_SIZE.observe(len(batch))
            await self._run(batch)

    async def _collect(self, loop: asyncio.AbstractEventLoop) -> None:
        """Let more commands arrive: until ``max_wait`` passes or the batch is full."""
        ready: asyncio.Future[None] = loop.create_future()
        timer = loop.call_later(self._max_wait, _resolve, ready)
        self._collecting.add(ready)
        try:
            await ready
        finally:
            timer.cancel()
            self._collecting.discard(ready)

    async def _run(self, batch: list[tuple[WorkItem, asyncio.Future[Outcome], float]]) -> None:
        try:
            with BATCH_SECONDS.time():
                outcomes = await self._runner([item for item, _, _ in batch])
        except Exception as exc:
            outcomes = [exc] * len(batch)
        for (_, future, _), outcome in zip(batch, outcomes, strict=True):
            if not future.done():
                future.set_result(outcome)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
