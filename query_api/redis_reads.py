"""Reads from the Redis projection: scores, per-user votes and ranked pages.

A ranked page comes from a snapshot of the ranking's top ``snapshot_max`` entries
(``ZRANGESTORE`` into a key with the same hash tag), shared by every reader of that sort for
``ranking_snapshot_seconds`` (so the order of a first page can be that many seconds old; its
counts are live). A snapshot lives a minute or two, and ``ranking_cursor_ttl_seconds`` once a
cursor pages through it: its memory is bounded by the cap and by what readers page through,
not by the ranking's size or the number of readers. The (signed) cursor names the snapshot and
an offset, so paging while scores change sees every comment exactly once, in the order of the
moment the first page was read.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Sequence
from typing import Any, cast

import msgspec
from redis.exceptions import RedisError

from kernel.coalesce import TickBatcher
from kernel.redis_client import AnyRedis, get_many
from projectors.generations import READER_CACHE_SECONDS, Generations
from projectors.progress import ProgressBoard
from projectors.redis_keys import (
    comment_key,
    count_key,
    intact_key,
    ranking_key,
    snapshot_key,
    snapshot_name,
    votes_key,
    where_key,
)
from query_api.consistency import NotYet
from query_api.cursors import BadCursor, Cursor, CursorSigner


class RedisLost(RedisError):
    """Redis lacks the live generation's data (flushed, restarted empty): read elsewhere.

    A ``RedisError``, so every read that falls back when Redis is down falls back here too.
    """


class Score(msgspec.Struct, frozen=True):
    comment_id: str
    up: int
    down: int
    score: int
    position: int
    deleted: bool = False
    replies: int = 0
    depth: int = 0
    parent: str | None = None


class Page(msgspec.Struct, frozen=True):
    ids: list[str]
    next_cursor: str | None


class RedisReads:
    """The Redis projection, read side: the live generation, followed across rebuilds."""

    def __init__(
        self,
        redis: AnyRedis,
        generation: str,
        snapshot_s: int,
        cursor_ttl_s: int,
        deployment: str = "tally",
        cursors: CursorSigner | None = None,
        snapshot_max: int = 1000,
    ) -> None:
        self.redis = redis
        self.snapshot_max = snapshot_max
        self.cursors = cursors or CursorSigner(b"tests-only", snapshot_max)
        self._first_ttl_s = min(cursor_ttl_s, max(2 * snapshot_s, 60))
        self._own_slot_s = max(1, snapshot_s) / 10
        self.progress = ProgressBoard(redis, deployment)
        self.generations = Generations(redis, generation)
        self._snapshot_s = snapshot_s
        self._cursor_ttl_s = cursor_ttl_s
        # A comment never moves to another commentable: remember where each one lives.
        self._where: dict[str, str] = {}
        self._one: TickBatcher[str, Score | None] = TickBatcher(self._scores_in_order)
        self._generation = generation
        self._intact = True
        self._checked_at = -1.0e9

    async def generation(self) -> str:
        """The live generation (checked at most every ``READER_CACHE_SECONDS``).

        ``RedisLost`` while its ``intact`` marker is missing: until the rebuild switches, its
        counts would be missing or partial.
        """
        if time.monotonic() - self._checked_at > READER_CACHE_SECONDS:
            generation = await self.generations.current()
            self._intact = bool(await self.redis.exists(intact_key(generation)))
            self._generation, self._checked_at = generation, time.monotonic()
        if not self._intact:
            raise RedisLost(f"redis generation {self._generation} lost its data; rebuilding")
        return self._generation

    async def score(self, comment_id: str) -> Score | None:
        """One comment's live counts; concurrent calls share one Redis round trip."""
        return await self._one.get(comment_id)

    async def _scores_in_order(self, comment_ids: list[str]) -> list[Score | None]:
        found = await self.scores(list(dict.fromkeys(comment_ids)))
        return [found.get(c) for c in comment_ids]

    async def commentables(self, comment_ids: Sequence[str]) -> list[str | None]:
        """Which commentable each comment belongs to (``None``: unknown to the projection)."""
        unknown = [c for c in comment_ids if c not in self._where]
        if unknown:
            generation = await self.generation()
            values = await get_many(self.redis, [where_key(generation, c) for c in unknown])
            if len(self._where) > 500_000:
                self._where.clear()
            for comment_id, value in zip(unknown, values, strict=True):
                if value is not None:
                    self._where[comment_id] = value.decode()
        return [self._where.get(c) for c in comment_ids]

    async def scores(self, comment_ids: Sequence[str]) -> dict[str, Score]:
        """Live counts of the comments the projection knows."""
        where = await self.commentables(comment_ids)
        generation = await self.generation()
        known = [(c, w) for c, w in zip(comment_ids, where, strict=True) if w is not None]
        fields = ["up", "down", "score", "pos", "deleted", "replies", "depth", "parent"]
        if len(known) == 1:  # the hot path: no pipeline machinery for one key
            comment_id, commentable = known[0]
            key = comment_key(generation, commentable, comment_id)
            rows = [await cast(Awaitable[list[Any]], self.redis.hmget(key, fields))]
        else:
            async with self.redis.pipeline(transaction=False) as pipe:
                for comment_id, commentable in known:
                    pipe.hmget(comment_key(generation, commentable, comment_id), fields)
                rows = await pipe.execute()
        return {
            comment_id: Score(
                comment_id,
                int(r[0] or 0),
                int(r[1] or 0),
                int(r[2] or 0),
                int(r[3] or 0),
                r[4] == b"1",
                int(r[5] or 0),
                int(r[6] or 0),
                r[7].decode() if r[7] else None,
            )
            for (comment_id, _), r in zip(known, rows, strict=True)
            if r[3] is not None
        }

    async def my_votes(self, user_id: str, comment_ids: Sequence[str]) -> dict[str, int]:
        """The user's vote on each comment (0 when none)."""
        where = await self.commentables(comment_ids)
        generation = await self.generation()
        async with self.redis.pipeline(transaction=False) as pipe:
            for comment_id, commentable in zip(comment_ids, where, strict=True):
                if commentable is not None:
                    pipe.hget(votes_key(generation, commentable, comment_id), user_id)
            values = iter(await pipe.execute())
        return {
            comment_id: int(next(values) or 0) if commentable is not None else 0
            for comment_id, commentable in zip(comment_ids, where, strict=True)
        }

    async def low_water(self, projection: str = "redis") -> int:
        """``projection``'s low-water mark: every event at or below it is applied."""
        return await self.progress.low_water(projection)

    async def comment_count(self, commentable_id: str) -> int:
        """How many comments (replies included) were posted on a commentable."""
        generation = await self.generation()
        return int(await self.redis.get(count_key(generation, commentable_id)) or 0)

    async def page(
        self,
        commentable_id: str,
        sort: str,
        limit: int,
        cursor: Cursor | None,
        parent_id: str | None = None,
        mark: int = 0,
        wanted: int = 0,
    ) -> Page:
        """One page of comment ids, best first, from a ranking snapshot of a list: the top-level
        comments, or the replies to ``parent_id``.

        ``mark``: the low-water mark the caller read just before (everything at or below it is
        in the rankings). A first page asked with ``min_position`` (``wanted``) never comes from
        a snapshot taken before the mark reached it: it takes one of its own.
        """
        generation = await self.generation()
        found: list[Any] | None = None
        for _ in range(3):
            now = time.time()
            if cursor is None:
                bucket = int(now // max(1, self._snapshot_s))
                snapshot, offset = snapshot_name(parent_id, sort, bucket), 0
                # At most one reader's own snapshot per slot: fresh positions cannot pile up
                # snapshots, whatever the traffic.
                candidates = [snapshot, f"{snapshot}:s{int(now // self._own_slot_s)}"]
            else:
                snapshot, offset = cursor.snapshot, cursor.offset
                candidates = [snapshot, snapshot]
            keys = [snapshot_key(generation, commentable_id, name) for name in candidates]
            keys += [f"{key}:at" for key in keys]
            keys.append(ranking_key(generation, commentable_id, sort, parent_id))
            # A cursor's snapshot must exist already; only a first page may create one.
            create = "1" if cursor is None else "0"
            found = await cast(
                Awaitable[list[Any] | None],
                self.redis.eval(
                    _PAGE,
                    len(keys),
                    *keys,
                    create,
                    str(self._first_ttl_s),
                    str(self._cursor_ttl_s),
                    str(self.snapshot_max),
                    str(offset),
                    str(offset + limit),
                    str(wanted),
                    str(mark),
                ),
            )
            if found is None or found[0] != 0:
                break
            # This slot's own snapshot predates the caller's write too: take one in the next.
            await asyncio.sleep(self._own_slot_s - now % self._own_slot_s + 0.001)
        if found is None:
            raise BadCursor("this cursor has expired; start again from the first page")
        if found[0] == 0:  # every slot was taken by readers behind this one: rare, and brief
            raise NotYet(wanted, mark)
        snapshot = candidates[int(found[0]) - 1]
        ids = [i.decode() for i in found[1]]
        more = len(ids) > limit and offset + limit < self.snapshot_max
        next_cursor = None
        if more:
            next_cursor = self.cursors.encode(
                Cursor(commentable_id, sort, snapshot, offset + limit, parent_id or "")
            )
        return Page(ids[:limit], next_cursor)


# KEYS: the shared snapshot, a snapshot of the caller's own, their ":at" keys (the low-water
# mark each was taken at), the ranking. ARGV: create?, ttl when created, ttl once paged, size
# cap, start, stop, wanted position (0: none), the caller's mark.
# The snapshot holds the ranking's top entries (at most the cap), so its memory is bounded
# whatever the ranking's size; a first page's snapshot lives briefly unless a cursor uses it.
# Returns {1 or 2: which snapshot, ids}, {0} when both predate the caller's position, or nil
# when a cursor's snapshot is gone.
_PAGE = """
local s = 1
if ARGV[1] == '1' and tonumber(ARGV[7]) > 0
   and tonumber(redis.call('GET', KEYS[3]) or '-1') < tonumber(ARGV[7]) then
  s = 2  -- the shared one predates the caller's own writes
  if redis.call('EXISTS', KEYS[2]) == 1
     and tonumber(redis.call('GET', KEYS[4]) or '-1') < tonumber(ARGV[7]) then
    return {0}  -- so does this slot's own one
  end
end
if redis.call('EXISTS', KEYS[s]) == 0 then
  if ARGV[1] == '0' then return nil end
  redis.call('ZRANGESTORE', KEYS[s], KEYS[5], 0, tonumber(ARGV[4]) - 1, 'REV')
  redis.call('EXPIRE', KEYS[s], ARGV[2])
  redis.call('SET', KEYS[s + 2], ARGV[8], 'EX', ARGV[2])
elseif ARGV[1] == '0' then
  redis.call('EXPIRE', KEYS[s], ARGV[3], 'GT')
  redis.call('EXPIRE', KEYS[s + 2], ARGV[3], 'GT')
end
return {s, redis.call('ZRANGE', KEYS[s], ARGV[5], ARGV[6], 'REV')}
"""
