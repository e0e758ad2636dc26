"""The log's answered head, recorded in Redis before any answer names a position above it.

The query API refuses a ``min_position`` above this head at once (``query_api.consistency``):
no command answered it, so a wait could never end well and would only cost the server its
read wait. Recorded once per batch, before the batch's answers are sent. If Redis does not take
it in time the answers go out anyway (a write must not fail on its read-side token); a reader
holding one of them may then be told its position is beyond the head until the next batch
records a higher one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog

from command_api.work import Accepted, BatchRunner, Outcome, WorkItem
from kernel.redis_client import redis_away
from projectors.progress import ProgressBoard

log = structlog.get_logger(__name__)


def recording_head(run: BatchRunner, board: ProgressBoard, timeout: float) -> BatchRunner:
    """``run``, recording the highest position its outcomes answer with before returning."""

    async def run_and_record(items: Sequence[WorkItem]) -> list[Outcome]:
        outcomes = await run(items)
        head = max((o.position for o in outcomes if isinstance(o, Accepted)), default=0)
        if head:
            try:
                await asyncio.wait_for(board.publish_head(head), timeout)
            except Exception as exc:
                if not (redis_away(exc) or isinstance(exc, TimeoutError)):
                    raise
                log.warning("head_not_recorded", head=head, error=repr(exc))
        return outcomes

    return run_and_record
