"""Ranking formulas (pure). The Redis Lua script mirrors them; tests hold the two together.

- top: ``up - down``.
- new: creation time in epoch milliseconds.
- best: lower bound of the Wilson score interval for the share of upvotes, at 95% confidence
  (z = 1.96): what the "true" upvote share is at least, given few or many votes.
- controversial: ``(up + down) ** (min(up, down) / max(up, down))``, 0 without both kinds: many
  votes, evenly split, rank highest.
- hot: ``sign(s) * log10(max(|s|, 1)) + (created_seconds - 1134028003) / 45000`` with
  ``s = up - down``: every 12.5 hours of age weighs as much as a tenfold score.
"""

from __future__ import annotations

import math

Z95 = 1.959963984540054
HOT_EPOCH = 1134028003
SORTS = ("top", "new", "best", "controversial", "hot")


def top(up: int, down: int) -> float:
    return float(up - down)


def best(up: int, down: int) -> float:
    n = up + down
    if n == 0:
        return 0.0
    p = up / n
    z2 = Z95 * Z95
    centre = p + z2 / (2 * n)
    spread = Z95 * math.sqrt((p * (1 - p) + z2 / (4 * n)) / n)
    return (centre - spread) / (1 + z2 / n)


def controversial(up: int, down: int) -> float:
    if up <= 0 or down <= 0:
        return 0.0
    return float((up + down) ** (min(up, down) / max(up, down)))


def hot(up: int, down: int, created_ms: int) -> float:
    s = up - down
    order = math.log10(max(abs(s), 1))
    sign = 1 if s > 0 else -1 if s < 0 else 0
    return sign * order + (created_ms / 1000 - HOT_EPOCH) / 45000


def scores(up: int, down: int, created_ms: int) -> dict[str, float]:
    """Every ranking score of a comment."""
    return {
        "top": top(up, down),
        "new": float(created_ms),
        "best": best(up, down),
        "controversial": controversial(up, down),
        "hot": hot(up, down, created_ms),
    }
