"""Process-wide tuning for Tally's long-running processes."""

from __future__ import annotations

import gc


def tune_gc() -> None:
    """Keep the cycle collector off what start-up built, and let the young generation grow.

    What exists by now lives as long as the process, so ``gc.freeze`` takes it out of every
    collection. A larger young generation makes full collections rare: on a busy API worker
    they were event-loop pauses of tens of ms, and a rebuild holding a few hundred thousand
    decoded events spent half its read time in them (``docs/performance.md``).
    """
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)
