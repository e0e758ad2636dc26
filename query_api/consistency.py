"""Read-your-writes: wait (bounded) until a projection has reached a position.

``min_position`` is a session token: a read given the highest position a client has seen
reflects every event at or below it. Lists and batches wait for the projection's low-water mark
(``projectors.progress``: every event at or below it is applied, across partitions and
processes). A single comment is done as soon as its own position or the mark gets there: its
events are applied in order, so its own position at P covers it too.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable

_POSITION = re.compile(r"[0-9]{1,18}")


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


async def wait_for_position(
    wanted: int, current: Callable[[], Awaitable[int]], timeout_s: float
) -> int:
    """Poll ``current`` until it reaches ``wanted``; return it, or raise ``NotYet``."""
    deadline = time.monotonic() + timeout_s
    delay = 0.002
    reached = await current()
    while reached < wanted:
        if time.monotonic() >= deadline:
            raise NotYet(wanted, reached)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)
        reached = await current()
    return reached
