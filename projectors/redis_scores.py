"""The Redis projection: live counters, per-user votes and rankings per commentable.

Keys are defined in ``projectors.redis_keys``. One Lua call per batch and commentable applies
the events, checks and stores each comment's last position in the same call, and publishes
every change (scores; new, edited and deleted comments) on the commentable's live channel. A
rebuild (``RedisRebuild``) folds each batch per comment first and merges the result instead.
The reconciler's repairs go through a script with the same position guard, so a repair never
moves a comment backwards.

A vote, edit or delete of a comment Redis does not have means Redis lost its data (flushed,
restarted empty, evicted): it is not applied (a vote on nothing would show negative counts),
and ``ReadModelLost`` asks for a rebuild. So does a generation without its ``intact`` marker.
"""

from __future__ import annotations

import asyncio
import functools
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from importlib import resources
from typing import Any, cast
from uuid import UUID

import msgspec
from redis.exceptions import NoScriptError, ResponseError

from kernel.redis_client import AnyRedis, get_many, queue_script
from projectors import redis_keys
from projectors.base import CannotApply, ReadModelLost
from projectors.compaction import CommentChange, compact
from projectors.generations import Generations, scan_batches
from projectors.judging import CommentHistory, Finding, StoredComment, judge
from projectors.store_errors import classify
from schemas.envelope import Envelope, Recorded
from schemas.events import CommentDeleted, CommentEdited, CommentPosted


def _script(name: str) -> str:
    folder = resources.files("projectors")
    return (folder / "redis_rank.lua").read_text() + (folder / name).read_text()


SCRIPT = _script("redis_scores.lua")
MERGE_SCRIPT = _script("redis_merge.lua")
RERANK_SCRIPT = _script("redis_rerank.lua")
REPAIR_SCRIPT = _script("redis_repair.lua")
_KIND = {CommentPosted: "P", CommentEdited: "E", CommentDeleted: "D"}
_CALLS_PER_PIPELINE = 500
_msgpack = msgspec.msgpack.Encoder()


async def _run_script(
    redis: AnyRedis, sha: str, calls: Sequence[tuple[list[str], Sequence[Any]]]
) -> list[Any]:
    results: list[Any] = []
    for start in range(0, len(calls), _CALLS_PER_PIPELINE):
        async with redis.pipeline(transaction=False) as pipe:
            for keys, args in calls[start : start + _CALLS_PER_PIPELINE]:
                queue_script(pipe, sha, keys, *args)
            # Errors come back as they are: raised by the pipeline, their message is lost
            # (redis-py), and the message is what tells OOM or BUSY from a failing script.
            replies = await pipe.execute(raise_on_error=False)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        results += replies
    return results


class _Blocks:
    """The keys of one Lua call over one commentable: its comment count, then a block of 8 keys
    per comment (``redis_keys.comment_block``), or of 3 when the call only counts (its hash, its
    votes, its parent's hash: a rebuild's bulk pass, which ranks nothing)."""

    def __init__(self, generation: str, commentable_id: str, counts_only: bool = False) -> None:
        self._generation = generation
        self._commentable = commentable_id
        self._counts_only = counts_only
        self.keys = [redis_keys.count_key(generation, commentable_id)]
        self._index: dict[str, int] = {}

    def of(self, comment_id: object, parent_id: object | None) -> int:
        """The 1-based index of the comment's block, adding the block on first use."""
        key = str(comment_id)
        if key not in self._index:
            self._index[key] = len(self.keys) + 1
            # Keys a script never touches still cost building, sending and parsing.
            block = redis_keys.counts_block if self._counts_only else redis_keys.comment_block
            self.keys += block(self._generation, self._commentable, key, parent_id or None)
        return self._index[key]


async def _record(redis: AnyRedis, generation: str, envelopes: Sequence[Recorded]) -> None:
    """Where each new comment lives (so a reader can find its keys from its id)."""
    posted = [e.event for e in envelopes if isinstance(e.event, CommentPosted)]
    if not posted:
        return
    async with redis.pipeline(transaction=False) as pipe:
        for event in posted:
            pipe.set(redis_keys.where_key(generation, event.comment_id), event.commentable_id)
        await pipe.execute()


class RedisScoresProjection:
    """Counters and rankings in Redis, written to the live generation (and a retiring one)."""

    name = "redis"

    def __init__(self, redis: AnyRedis, generation: str = "1") -> None:
        self._redis = redis
        self.generations = Generations(redis, generation)
        self._sha = ""
        self._repair_sha = ""

    async def setup(self) -> None:
        """Load the Lua scripts."""
        self._sha = await self._redis.script_load(SCRIPT)
        self._repair_sha = await self._redis.script_load(REPAIR_SCRIPT)

    async def apply(self, envelopes: Sequence[Envelope]) -> None:
        """Apply to every generation the pointer says is written; publish from the live one."""
        lost: list[str] = []
        for index, generation in enumerate(await self.generations.written()):
            lost += await self.apply_to(generation, envelopes, publish=index == 0)
        if lost:
            raise ReadModelLost(f"redis has lost comments {sorted(set(lost))[:5]}")

    async def apply_to(
        self, generation: str, envelopes: Sequence[Recorded], publish: bool = True
    ) -> list[str]:
        """One Lua call per commentable in the batch, sent in one pipeline.

        Returns the comments Redis has lost (their events were not applied).
        """
        by_commentable: dict[str, list[Recorded]] = defaultdict(list)
        for envelope in envelopes:
            by_commentable[envelope.event.commentable_id].append(envelope)
        calls = [self._call(generation, c, events, publish) for c, events in by_commentable.items()]
        try:
            try:
                results = await _run_script(self._redis, self._sha, calls)
            except NoScriptError:
                await self.setup()
                results = await _run_script(self._redis, self._sha, calls)
        except ResponseError as exc:
            if classify(exc) == "transient":
                raise  # OOM, READONLY, BUSY...: Redis cannot write now, the events are fine
            # A script error is about the data of these events: find the one that fails.
            raise CannotApply(envelopes[0], f"redis script failed: {exc}") from exc
        await _record(self._redis, generation, envelopes)
        return [cid.decode() for found in results for cid in found]

    async def intact(self) -> bool:
        """Is the live generation's ``intact`` marker there?"""
        generation = await self.generations.current()
        return bool(await self._redis.exists(redis_keys.intact_key(generation)))

    async def mark_intact(self) -> None:
        """Mark the live generation as whole (it is filled from nothing)."""
        await mark_intact(self._redis, await self.generations.current())

    async def reconcile(
        self, histories: Mapping[str, CommentHistory], low_water: int, repair: bool
    ) -> list[Finding]:
        """Compare each comment with the fold of its history; repair it when asked."""
        generation = await self.generations.current()
        items = [(cid, h) for cid, h in histories.items() if h]
        first = await self._stored(generation, items)
        suspects = [(cid, h) for cid, h in items if judge(first[cid], h, low_water) is not None]
        # The reads of a comment's hash and of its votes are not atomic: a live batch applied
        # between them shows newer votes than the position read. A comment is wrong only if a
        # second read at the same position says so too.
        again = await self._stored(generation, suspects) if suspects else {}
        findings = []
        for comment_id, history in suspects:
            before, now = first[comment_id], again[comment_id]
            if before is not None and (now is None or now.position != before.position):
                continue  # moved on meanwhile: the next pass looks again
            detail = judge(now, history, low_water)
            if detail:
                findings.append(Finding(self.name, comment_id, detail))
        if repair and findings:
            wrong = {f.comment_id for f in findings}
            for written in await self.generations.written():
                await self._repair(written, [histories[c] for c in wrong])
        return findings

    async def _stored(
        self, generation: str, items: Sequence[tuple[str, CommentHistory]]
    ) -> dict[str, StoredComment | None]:
        """What Redis holds for each comment; on top of a kept fold, only the new voters'
        votes and the count of all."""
        voters = {cid: sorted(h.voters()) if h.known else None for cid, h in items}
        async with self._redis.pipeline(transaction=False) as pipe:
            for comment_id, history in items:
                commentable = history.commentable_id
                pipe.hmget(
                    redis_keys.comment_key(generation, commentable, comment_id),
                    ["up", "down", "deleted", "pos"],
                )
                votes_key = redis_keys.votes_key(generation, commentable, comment_id)
                some = voters[comment_id]
                if some is None:
                    pipe.hgetall(votes_key)
                else:
                    pipe.hlen(votes_key)
                    if some:
                        pipe.hmget(votes_key, some)
            rows = iter(await pipe.execute())
        stored: dict[str, StoredComment | None] = {}
        for comment_id, _ in items:
            await asyncio.sleep(0)  # the live batches go on between comments
            raw = next(rows)
            some = voters[comment_id]
            count = None
            if some is None:
                votes = {u.decode(): int(v) for u, v in next(rows).items()}
            else:
                count = int(next(rows))
                values = next(rows) if some else []
                votes = {u: int(v) for u, v in zip(some, values, strict=True) if v is not None}
            stored[comment_id] = None
            if raw[3] is not None:
                stored[comment_id] = StoredComment(
                    position=int(raw[3]),
                    up=int(raw[0] or 0),
                    down=int(raw[1] or 0),
                    deleted=raw[2] == b"1",
                    votes=votes,
                    votes_of=None if some is None else frozenset(some),
                    vote_count=count,
                )
        return stored

    async def _repair(self, generation: str, histories: Iterable[CommentHistory]) -> None:
        """Write each comment's fold, guarded by position, one call per commentable."""
        by_commentable: dict[str, list[list[object]]] = defaultdict(list)
        blocks: dict[str, _Blocks] = {}
        for history in histories:
            truth = history.truth_at()
            if truth is None:
                continue
            view = truth.view
            commentable = view.commentable_id
            block = blocks.setdefault(commentable, _Blocks(generation, commentable))
            by_commentable[commentable].append(
                [
                    block.of(view.comment_id, view.parent_id),
                    str(view.comment_id),
                    view.position,
                    int(view.created_at.timestamp() * 1000) if view.created_at else 0,
                    int(view.deleted),
                    view.up,
                    view.down,
                    [x for pair in truth.votes.items() for x in pair],
                    str(view.parent_id) if view.parent_id else "",
                    view.depth,
                ]
            )
        calls = [(blocks[c].keys, [_msgpack.encode(t)]) for c, t in by_commentable.items()]
        try:
            await _run_script(self._redis, self._repair_sha, calls)
        except NoScriptError:
            await self.setup()
            await _run_script(self._redis, self._repair_sha, calls)
        async with self._redis.pipeline(transaction=False) as pipe:
            for commentable, rows in by_commentable.items():
                for row in rows:
                    pipe.set(redis_keys.where_key(generation, row[1]), commentable)
            await pipe.execute()

    async def close(self) -> None:
        """Nothing to release: the client belongs to the caller."""

    @staticmethod
    def _call(
        generation: str, commentable_id: str, envelopes: list[Recorded], publish: bool
    ) -> tuple[list[str], list[str | bytes]]:
        blocks = _Blocks(generation, commentable_id)
        # Per comment, not per event: its block and its id and parent as text.
        known: dict[UUID, tuple[int, str, str]] = {}
        events: list[tuple[object, ...]] = []
        for envelope in envelopes:
            event = envelope.event
            found = known.get(event.comment_id)
            if found is None:
                comment_id = str(event.comment_id)
                parent = str(event.parent_id) if event.parent_id else ""
                found = known[event.comment_id] = (
                    blocks.of(comment_id, parent),
                    comment_id,
                    parent,
                )
            block, comment_id, parent = found
            # The last value: a new comment's depth, an edit's new text (for live pages).
            created, extra = 0, getattr(event, "content", "")
            if isinstance(event, CommentPosted):
                created, extra = int(envelope.occurred_at.timestamp() * 1000), event.depth
            events.append(
                (
                    block,
                    _KIND.get(type(event), "V"),
                    envelope.position,
                    getattr(event, "value", 0),
                    getattr(event, "previous", 0),
                    created,
                    getattr(event, "user_id", ""),
                    comment_id,
                    parent,
                    extra,
                )
            )
        channel = redis_keys.live_channel(commentable_id) if publish else ""
        return blocks.keys, [channel, _msgpack.encode(events)]


async def mark_intact(redis: AnyRedis, generation: str) -> None:
    """Set a generation's ``intact`` marker."""
    await cast(Awaitable[Any], redis.set(redis_keys.intact_key(generation), "1"))


class RedisRebuild:
    """Fills one generation fast: each batch is folded per comment, then merged in Lua.

    Idempotent like the live projection: a comment's change is skipped when its stored position
    is at or past the change, and a comment part-applied by an interrupted run gets its events
    one at a time through the live script (which skips what it has).
    """

    def __init__(self, redis: AnyRedis, generation: str) -> None:
        self._redis = redis
        self.generation = generation
        self._events = RedisScoresProjection(redis, generation)
        self._sha = ""
        self._rerank_sha = ""
        # Off during the bulk pass: ranking every comment once at its end costs far less than
        # re-ranking it in every batch.
        self.ranking = False

    async def setup(self) -> None:
        """Load the scripts."""
        self._sha = await self._redis.script_load(MERGE_SCRIPT)
        self._rerank_sha = await self._redis.script_load(RERANK_SCRIPT)
        await self._events.setup()

    async def rank_all(self) -> int:
        """Rank every comment of the generation from its counts; from now on, rank as we go."""
        ranked = 0
        async for keys in scan_batches(self._redis, redis_keys.where_pattern(self.generation)):
            commentables = await get_many(self._redis, keys)
            by_commentable: dict[str, list[str]] = defaultdict(list)
            for key, commentable in zip(keys, commentables, strict=True):
                if commentable is not None:
                    by_commentable[commentable.decode()].append(key.decode().rsplit(":", 1)[1])
            # The script finds each comment's list from its stored parent: ids are all it needs.
            calls = [
                (
                    [redis_keys.count_key(self.generation, commentable_id)],
                    [redis_keys.prefix(self.generation, commentable_id), *comment_ids],
                )
                for commentable_id, comment_ids in by_commentable.items()
            ]
            ranked += sum(await _run_script(self._redis, self._rerank_sha, calls))
        self.ranking = True
        return ranked

    async def apply(self, envelopes: Sequence[Recorded]) -> None:
        """Merge the batch's changes; apply part-applied comments event by event."""
        await self.stage(envelopes)()

    def stage(self, envelopes: Sequence[Recorded]) -> Callable[[], Awaitable[None]]:
        """Fold the batch and build its merge calls now; return the write, to be started after
        the previous batch's write has finished (the caller folds the next batch meanwhile)."""
        by_commentable: dict[str, list[tuple[str, CommentChange]]] = defaultdict(list)
        for comment_id, change in compact(envelopes).items():
            by_commentable[change.commentable_id].append((comment_id, change))
        calls = [self._call(c, changes) for c, changes in by_commentable.items()]
        return functools.partial(self._write, calls, envelopes)

    async def _write(
        self, calls: list[tuple[list[str], list[Any]]], envelopes: Sequence[Recorded]
    ) -> None:
        try:
            results = await _run_script(self._redis, self._sha, calls)
        except NoScriptError:
            await self.setup()
            results = await _run_script(self._redis, self._sha, calls)
        redo = {cid.decode() for found in results for cid in found}
        if redo:
            again = [e for e in envelopes if str(e.event.comment_id) in redo]
            lost = await self._events.apply_to(self.generation, again, publish=False)
            if lost:
                raise ReadModelLost(
                    f"generation {self.generation} lost comments during its rebuild"
                )
        await _record(self._redis, self.generation, envelopes)

    def _call(
        self, commentable_id: str, changes: Iterable[tuple[str, CommentChange]]
    ) -> tuple[list[str], list[Any]]:
        blocks = _Blocks(self.generation, commentable_id, counts_only=not self.ranking)
        packed = [(blocks.of(comment_id, c.parent), comment_id, c) for comment_id, c in changes]
        return blocks.keys, ["1" if self.ranking else "0", _msgpack.encode(packed)]
