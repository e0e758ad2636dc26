"""Group commit: coalesce concurrent commands into one transaction.

A worker takes the first queued command, waits until ``max_wait`` has passed or ``max_batch``
commands are queued, and runs what is queued together: one lock on the log head and one fsync
for the lot. While a batch commits, the next one collects in the queue; more workers
(``TALLY_GROUP_COMMIT_WORKERS``) commit several at once, in smaller batches, which costs more
per command (see docs/performance.md). The wait costs one timer per batch, never one per
command.

Bounded: at most ``max_queue`` commands wait (past that, ``Overloaded`` at once: the API answers
503 with Retry-After instead of queuing), and a command still queued at its deadline is dropped
unrun (its client has been told to retry), so a stalled database does not pile up work that
would run long after everyone gave up.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from prometheus_client import Counter, Gauge, Histogram

from command_api.work import BatchRunner, Outcome, WorkItem
from kernel.coalesce import one_by_one_on_failure

Submit = Callable[[WorkItem], Awaitable[Outcome]]

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


QUEUED = Gauge("tally_group_commit_queued", "Commands waiting for a group-commit batch")
SHED = Counter(
    "tally_commands_shed_total",
    "Commands refused unrun: queue full or deadline passed while queued",
    ["reason"],
)


class Overloaded(Exception):
    """Too much work queued (or waited too long): nothing was written; retry later."""

    def __init__(self, reason: str, retry_after: int = 1) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class CommandTimedOut(Overloaded):
    """No outcome within the deadline: the command may still be applied (retry with the same
    Idempotency-Key to learn which)."""


def with_deadline(submit: Submit, seconds: float) -> Submit:
    """``submit`` that gives up waiting after ``seconds`` (the work itself goes on)."""

    async def bounded(item: WorkItem) -> Outcome:
        work = asyncio.ensure_future(submit(item))
        try:
            return await asyncio.wait_for(asyncio.shield(work), seconds)
        except TimeoutError:
            SHED.labels("timed-out").inc()
            raise CommandTimedOut(
                f"no outcome within {seconds:g} s; it may still be applied:"
                " retry with the same Idempotency-Key to learn its outcome"
            ) from None

    return bounded


class GroupCommitter:
    """Queue commands and run them in batches through ``runner``."""

    def __init__(
        self,
        runner: BatchRunner,
        max_wait_ms: float,
        max_batch: int,
        workers: int = 3,
        max_queue: int = 4096,
        deadline_ms: float = 5000,
    ) -> None:
        self._runner = runner
        self._max_wait = max_wait_ms / 1000
        self._max_batch = max_batch
        self._workers = workers
        self._max_queue = max_queue
        self._deadline = deadline_ms / 1000
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
        """Queue ``item`` and wait for its own outcome; ``Overloaded`` when the queue is full."""
        if self._queue.qsize() >= self._max_queue:
            SHED.labels("queue-full").inc()
            raise Overloaded(f"{self._max_queue} commands are already waiting")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        self._queue.put_nowait((item, future, loop.time()))
        QUEUED.set(self._queue.qsize())
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
            QUEUED.set(self._queue.qsize())
            started = loop.time()
            live = []
            for entry in batch:
                _, future, queued_at = entry
                QUEUE_WAIT.observe(started - queued_at)
                if future.done():
                    continue  # its request is gone
                if started - queued_at > self._deadline:
                    SHED.labels("deadline").inc()
                    future.set_exception(Overloaded("the command waited too long to run"))
                    continue
                live.append(entry)
            if live:
                BATCH_SIZE.observe(len(live))
                await self._run(live)

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
        # The runner already splits a batch PostgreSQL refused; anything else it raises is run
        # again command by command, so it reaches only the command that caused it.
        with BATCH_SECONDS.time():
            outcomes = await one_by_one_on_failure(self._runner, [item for item, _, _ in batch])
        for (_, future, _), outcome in zip(batch, outcomes, strict=True):
            if not future.done():
                future.set_result(outcome)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
