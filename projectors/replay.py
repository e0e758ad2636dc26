"""``tally replay``: rebuild a projection from the event store with reads staying up.

1. Fill a new target (Redis generation, Elasticsearch index) beside the live one, streaming the
   log with COPY in large batches. Progress is recorded in ``replays`` after every batch, so an
   interrupted run resumes where it stopped (the target is idempotent, like every projection).
2. Catch up with the head while live traffic goes on, until little is left.
3. Take the switch fence: live projectors finish their batch and wait. Apply the last events up
   to the head, switch atomically, let go. The new target now holds every event up to the head,
   so it is never behind the old one; the live projector goes on from its own position and skips
   what the rebuild applied already.
4. Retire the old target, and drop it unless ``--keep``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
import structlog

from event_store.bulk_read import read_ahead, stream_log
from projectors.fence import SwitchFence
from projectors.rebuilds import Rebuild
from schemas.envelope import Recorded

log = structlog.get_logger(__name__)

CATCH_UP_SLACK = 5_000  # events left for the fenced final step


@dataclass(slots=True)
class Progress:
    """How a replay is doing, for a progress bar."""

    projection: str
    target: str
    done: int  # events applied by this run
    total: int  # events this run has to apply (grows while live traffic goes on)
    position: int
    resumed_from: int
    started: float

    @property
    def rate(self) -> float:
        """Events per second so far."""
        return self.done / max(1e-9, time.monotonic() - self.started)


@dataclass(frozen=True, slots=True)
class ReplayResult:
    projection: str
    target: str
    replaced: str
    resumed_from: int
    position: int
    events: int
    seconds: float  # until the switch
    total_seconds: float  # with the grace period and dropping the old target


class ReplayRunning(Exception):
    """Another ``tally replay`` of the same projection holds it."""


# Session advisory lock (two-key form: 31250 marks replays) held on the control connection for
# the whole run, so a second replay of one projection cannot resume the first's target under it.
_ONE_AT_A_TIME = "SELECT pg_try_advisory_lock(31250, hashtext(%s))"


async def replay(
    dsn: str,
    rebuild: Rebuild[Any],
    *,
    keep: bool = False,
    batch_size: int | None = None,
    on_progress: Callable[[Progress], None] = lambda _: None,
) -> ReplayResult:
    """Rebuild one projection; see the module docstring."""
    size = batch_size or rebuild.batch_size
    fence = SwitchFence(dsn, rebuild.name)
    async with (
        await psycopg.AsyncConnection.connect(dsn, autocommit=True) as control,
        await psycopg.AsyncConnection.connect(dsn, autocommit=True) as reader,
    ):
        locked = await (await control.execute(_ONE_AT_A_TIME, (rebuild.name,))).fetchone()
        if not (locked and locked[0]):
            raise ReplayRunning(
                f"another `tally replay` of {rebuild.name} is running;"
                " wait for it to finish (or stop it: a later run resumes where it stopped)"
            )
        cur = await control.execute(
            "SELECT target, position FROM replays WHERE projection = %s", (rebuild.name,)
        )
        row = await cur.fetchone()
        resume, position = (str(row[0]), int(row[1])) if row else (None, 0)
        target = await rebuild.begin(resume)
        if row is None:
            await control.execute(
                "INSERT INTO replays (projection, target) VALUES (%s, %s)", (rebuild.name, target)
            )
        log.info("replay_started", projection=rebuild.name, target=target, resumed_from=position)
        progress = Progress(rebuild.name, target, 0, 0, position, position, time.monotonic())

        async def written(batch: Sequence[Recorded]) -> None:
            progress.position = batch[-1].position
            progress.done += len(batch)
            await control.execute(
                "UPDATE replays SET position = %s, updated_at = now() WHERE projection = %s",
                (progress.position, rebuild.name),
            )
            on_progress(progress)

        async def copy_upto(head: int) -> None:
            progress.total = progress.done + head - progress.position
            # Each batch is staged (folded) while the one before it is written; writes go one
            # at a time, in position order, and only what was written counts as progress.
            writing: asyncio.Future[None] | None = None
            last: Sequence[Recorded] = ()
            batches = read_ahead(stream_log(reader, progress.position, head, rebuild.log, size))
            try:
                async for batch in batches:
                    staged = rebuild.stage(batch)
                    if writing is not None:
                        await writing
                    writing = asyncio.ensure_future(staged())
                    if last:  # written: its progress is recorded while this batch is written
                        await written(last)
                    last = batch
                if writing is not None:
                    await writing
                    await written(last)
            finally:
                # On an error, stop the reader now, before its connection is closed.
                await batches.aclose()
                if writing is not None and not writing.done():
                    writing.cancel()

        await copy_upto(await _head(control))
        await rebuild.bulk_done()
        while (head := await _head(control)) - progress.position > CATCH_UP_SLACK:
            await copy_upto(head)
        try:
            async with fence.exclusive():
                await copy_upto(await _head(control))
                replaced = await rebuild.switch()
        finally:
            await fence.close()
        switched = time.monotonic() - progress.started
        log.info("replay_switched", projection=rebuild.name, target=target, replaced=replaced)
        on_progress(progress)
        await rebuild.finish(replaced, keep)
        await control.execute("DELETE FROM replays WHERE projection = %s", (rebuild.name,))
    return ReplayResult(
        rebuild.name,
        target,
        replaced,
        progress.resumed_from,
        progress.position,
        progress.done,
        switched,
        time.monotonic() - progress.started,
    )


async def _head(conn: psycopg.AsyncConnection[Any]) -> int:
    cur = await conn.execute("SELECT position FROM event_head")
    row = await cur.fetchone()
    return int(row[0]) if row else 0
