"""What earlier reconciliation passes folded, kept so that a pass reads only what is new.

A hot comment's history grows with every vote, and a pass that read and folded all of it
every few seconds would cost the projector more with each vote. So after a check the fold of
a comment's events up to the low-water mark is kept (the log is append-only and every event
at or below that mark is final), and the next check reads only the events after it. Pure,
no I/O. Bounded by the votes the kept folds hold (the least recently used go first), and a
fold is kept at most ``max_age`` seconds: that often, each history is read whole again, so a
read model's fault in older events is still found.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

from projectors.judging import CommentHistory, Truth
from schemas.envelope import Envelope


class _Kept(NamedTuple):
    position: int
    truth: Truth
    since: float
    size: int


class KeptTruths:
    """Per comment, the fold of its events up to some position at or below a low-water mark."""

    def __init__(
        self,
        max_votes: int = 200_000,
        max_age: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._kept: OrderedDict[str, _Kept] = OrderedDict()
        self._max_votes = max_votes
        self._max_age = max_age
        self._clock = clock
        self._size = 0

    def __len__(self) -> int:
        return len(self._kept)

    def positions(self, comment_ids: Iterable[str]) -> dict[str, int]:
        """For each of ``comment_ids`` with a fold kept, the position it is folded up to."""
        now = self._clock()
        known = {}
        for comment_id in comment_ids:
            kept = self._kept.get(comment_id)
            if kept is None:
                continue
            if now - kept.since > self._max_age:
                self._drop(comment_id)
            else:
                known[comment_id] = kept.position
        return known

    def history(self, comment_id: str, events: Sequence[Envelope]) -> CommentHistory:
        """``events`` (those after the kept fold, if one is kept) on top of the kept fold."""
        kept = self._kept.get(comment_id)
        if kept is None:
            return CommentHistory(events)
        return CommentHistory(events, kept.truth, kept.position)

    def keep(self, comment_id: str, history: CommentHistory, low_water: int) -> None:
        """Keep the fold of ``history`` up to its last event at or below ``low_water``."""
        upto = next((e.position for e in reversed(history.events) if e.position <= low_water), 0)
        kept = self._kept.get(comment_id)
        if not upto or (kept is not None and upto <= kept.position):
            if kept is not None:
                self._kept.move_to_end(comment_id)
            return
        truth = history.truth_at(upto)
        if truth is None:
            return
        since = kept.since if kept is not None else self._clock()
        if kept is not None:
            self._drop(comment_id)
        size = 1 + len(truth.votes)
        self._kept[comment_id] = _Kept(upto, truth, since, size)
        self._size += size
        while self._size > self._max_votes and self._kept:
            self._drop(next(iter(self._kept)))

    def clear(self) -> None:
        """Forget every fold (the low-water mark went back: a read model starts over)."""
        self._kept.clear()
        self._size = 0

    def _drop(self, comment_id: str) -> None:
        kept = self._kept.pop(comment_id)
        self._size -= kept.size
