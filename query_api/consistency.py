"""Read-your-writes: wait (bounded) until a projection has reached a position.

``min_position`` is a session token: a read given the highest position a client has seen
reflects every event at or below it. Lists and batches wait for the projection's low-water mark
(``projectors.progress``: every event at or below it is applied, across partitions and
processes). A single comment is done as soon as its own position or the mark gets there: its
events are applied in order, so its own position at P covers it too.

Waits are woken by the projectors' announcements (``ProgressWatch``, fed by the process's one
Redis subscription), not by polling: a read checks Redis once, then at most every
``RECHECK_SECONDS`` in case an announcement was missed. A position above the log's answered
head is refused at once (``BeyondHead``): no command answered it, so no wait can reach it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable

_POSITION = re.compile(r"[0-9]{1,18}")
RECHECK_SECONDS = 0.25
HEAD = "head"  # the name the answered head is announced under


def parse_position(text: str) -> int | None:
    """A position from a header: ASCII digits only (``"²".isdigit()`` is true), at most 18 of
    them (within a PostgreSQL bigint); ``None`` for anything else."""
    return int(text) if _POSITION.fullmatch(text) else None


class NotYet(Exception):
    """The projection did not reach the position in time."""

    def __init__(self, wanted: int, reached: int) -> None:
        super().__init__(f"the read model reached position {reached}, not {wanted}, in time")
        self.wanted = wanted
        self.reached = reached


class BeyondHead(ValueError):
    """A position no command has answered with: it can only be made up."""

    def __init__(self, wanted: int, head: int) -> None:
        super().__init__(
            f"min_position {wanted} is beyond the log's head ({head}): use a position an answer"
            " of the command API gave"
        )
        self.wanted = wanted
        self.head = head


class ProgressWatch:
    """The marks the projectors (and the head the command API) announce, as they come."""

    def __init__(self) -> None:
        self._marks: dict[str, int] = {}
        self._changed = asyncio.Event()

    def mark(self, name: str) -> int:
        return self._marks.get(name, 0)

    def highest(self) -> int:
        """The highest mark announced for anything: every position at or below it exists."""
        return max(self._marks.values(), default=0)

    def announce(self, name: str, mark: int) -> None:
        """``name`` reached ``mark``: wake every wait (marks only rise)."""
        if mark > self._marks.get(name, 0):
            self._marks[name] = mark
            woken, self._changed = self._changed, asyncio.Event()
            woken.set()

    async def changed(self, seconds: float) -> None:
        """Return at the next announcement, or after ``seconds``."""
        event = self._changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)


async def wait_for_position(
    wanted: int,
    current: Callable[[], Awaitable[int]],
    timeout_s: float,
    watch: ProgressWatch | None = None,
    projection: str = "redis",
) -> int:
    """Wait until ``current()`` (or ``projection``'s announced mark) reaches ``wanted``;
    return it, or raise ``NotYet``."""
    deadline = time.monotonic() + timeout_s
    reached = await current()
    checked = time.monotonic()
    delay = 0.002
    while reached < wanted:
        now = time.monotonic()
        if now >= deadline:
            raise NotYet(wanted, reached)
        if watch is None:  # no announcements to listen to: poll, backing off
            await asyncio.sleep(min(delay, deadline - now))
            delay = min(delay * 2, 0.05)
            reached = max(reached, await current())
            continue
        await watch.changed(min(deadline - now, RECHECK_SECONDS))
        reached = max(reached, watch.mark(projection))
        if reached < wanted and time.monotonic() - checked >= RECHECK_SECONDS:
            reached = max(reached, await current())
            checked = time.monotonic()
    return reached


async def refuse_beyond_head(
    wanted: int, watch: ProgressWatch | None, head: Callable[[], Awaitable[int]]
) -> None:
    """``BeyondHead`` if no command has answered with ``wanted`` yet (checked in memory first,
    then once in Redis)."""
    if watch is not None and max(watch.mark(HEAD), watch.highest()) >= wanted:
        return
    answered = await head()
    if watch is not None:
        watch.announce(HEAD, answered)
    if answered < wanted:
        raise BeyondHead(wanted, answered)
