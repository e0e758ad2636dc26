"""``tally verify``: prove the read models equal a fold of the event store.

The store is folded up to its head at the start. On a live system a projection may already be
past that point for some comments: those are skipped (counted), never called wrong. Before
comparing, verify waits (bounded) until the Redis projection's checkpoint reaches the head.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from elasticsearch import AsyncElasticsearch
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from event_store.postgres import PostgresEventStore
from projectors.fold import CommentView, fold, user_votes
from projectors.redis_keys import checkpoint_key, comment_key, votes_key
from schemas.envelope import Envelope
from schemas.events import VoteCast, VoteChanged, VoteRetracted


@dataclass
class Report:
    """What one projection's check found."""

    projection: str
    checked: int = 0
    skipped: int = 0
    mismatches: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches


def compare_counts(view: CommentView, stored: dict[str, Any] | None, name: str) -> str | None:
    """A description of how ``stored`` differs from ``view`` (``None`` when they agree)."""
    if stored is None:
        return f"{name}: comment {view.comment_id} is missing (expected position {view.position})"
    got = {k: stored.get(k) for k in ("up", "down", "score", "deleted", "position")}
    want = {
        "up": view.up,
        "down": view.down,
        "score": view.score,
        "deleted": view.deleted,
        "position": view.position,
    }
    wrong = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
    if not wrong:
        return None
    detail = ", ".join(f"{k} is {g} but should be {w}" for k, (g, w) in wrong.items())
    return f"{name}: comment {view.comment_id}: {detail}"


async def read_log(pool: AsyncConnectionPool[Any]) -> tuple[int, list[Envelope]]:
    """The head position and every event up to it."""
    store = PostgresEventStore(pool)
    head = await store.head()
    events = [e async for batch in store.read_all(until=head, batch_size=10_000) for e in batch]
    return head, events


async def verify_redis(
    redis: Redis,
    generation: str,
    views: dict[UUID, CommentView],
    votes: dict[tuple[UUID, str], int],
) -> Report:
    report = Report("redis")
    by_comment: dict[UUID, dict[str, int]] = {}
    for (comment_id, user), vote in votes.items():
        by_comment.setdefault(comment_id, {})[user] = vote
    items = list(views.values())
    for start in range(0, len(items), 1000):
        chunk = items[start : start + 1000]
        async with redis.pipeline(transaction=False) as pipe:
            for view in chunk:
                pipe.hmget(
                    comment_key(generation, view.commentable_id, view.comment_id),
                    ["up", "down", "score", "deleted", "pos"],
                )
                pipe.hgetall(votes_key(generation, view.commentable_id, view.comment_id))
            rows = await pipe.execute()
        for n, view in enumerate(chunk):
            raw, stored_votes = rows[2 * n], rows[2 * n + 1]
            stored = None
            if raw[4] is not None:
                stored = {
                    "up": int(raw[0]),
                    "down": int(raw[1]),
                    "score": int(raw[2]),
                    "deleted": raw[3] == b"1",
                    "position": int(raw[4]),
                }
            if stored is not None and stored["position"] > view.position:
                report.skipped += 1  # moved on since the head we folded
                continue
            report.checked += 1
            problem = compare_counts(view, stored, "redis")
            expected = by_comment.get(view.comment_id, {})
            got = {u.decode(): int(v) for u, v in stored_votes.items()}
            if problem is None and got != expected:
                problem = f"redis: comment {view.comment_id}: votes are {got}, should be {expected}"
            if problem:
                report.mismatches.append(problem)
    return report


async def verify_comments(
    es: AsyncElasticsearch, alias: str, views: dict[UUID, CommentView]
) -> Report:
    report = Report("comments")
    items = list(views.values())
    for start in range(0, len(items), 1000):
        chunk = items[start : start + 1000]
        found = await es.mget(index=alias, ids=[str(v.comment_id) for v in chunk])
        docs = {d["_id"]: d["_source"] for d in found["docs"] if d.get("found")}
        for view in chunk:
            doc = docs.get(str(view.comment_id))
            if doc is not None and doc["position"] > view.position:
                report.skipped += 1
                continue
            report.checked += 1
            problem = compare_counts(view, doc, "comments")
            if problem is None and doc is not None and doc.get("content") != view.content:
                problem = f"comments: comment {view.comment_id}: content differs"
            if problem:
                report.mismatches.append(problem)
    return report


async def verify_votes(es: AsyncElasticsearch, alias: str, events: Iterable[Envelope]) -> Report:
    report = Report("votes")
    vote_ids = [
        str(e.event_id)
        for e in events
        if isinstance(e.event, VoteCast | VoteChanged | VoteRetracted)
    ]
    for start in range(0, len(vote_ids), 1000):
        chunk = vote_ids[start : start + 1000]
        found = await es.mget(index=alias, ids=chunk)
        missing = [d["_id"] for d in found["docs"] if not d.get("found")]
        report.checked += len(chunk)
        report.mismatches += [f"votes: no document for vote event {m}" for m in missing]
    return report


async def wait_for_checkpoint(redis: Redis, generation: str, head: int, seconds: float) -> bool:
    """Wait until the Redis projection has applied ``head``; False if it did not in time."""
    deadline = time.monotonic() + seconds
    while True:
        if int(await redis.get(checkpoint_key(generation)) or 0) >= head:
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.2)


async def verify(
    pool: AsyncConnectionPool[Any],
    redis: Redis,
    es: AsyncElasticsearch,
    *,
    generation: str,
    comments_alias: str,
    votes_alias: str,
    projections: Iterable[str],
    wait_seconds: float = 30,
) -> tuple[int, list[Report]]:
    """Compare the named projections with the fold of the store; return (head, reports)."""
    head, events = await read_log(pool)
    views = fold(events)
    wanted = set(projections)
    reports = []
    if "redis" in wanted:
        await wait_for_checkpoint(redis, generation, head, wait_seconds)
        reports.append(await verify_redis(redis, generation, views, user_votes(events)))
    if "comments" in wanted:
        reports.append(await verify_comments(es, comments_alias, views))
    if "votes" in wanted:
        reports.append(await verify_votes(es, votes_alias, events))
    return head, reports
