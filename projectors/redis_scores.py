"""The Redis projection: live counters, per-user votes and rankings per commentable.

Keys (``g`` is the generation, so a rebuild can fill a new keyspace and switch; see
``projectors.generations``):

- ``tally:g<g>:{<commentable>}:c:<comment>``: hash ``up down score pos created deleted``
- ``tally:g<g>:{<commentable>}:v:<comment>``: hash user -> vote (-1 or 1)
- ``tally:g<g>:{<commentable>}:rank:<sort>``: sorted sets for top, new, best, controversial, hot
- ``tally:g<g>:where:<comment>``: the comment's commentable (so a reader can find the keys)
- ``tally:g<g>:checkpoint``: the highest position applied (only ever raised)

One Lua call per batch and commentable applies the events, checks and stores each comment's
last position in the same call, and publishes every score change on ``tally:live:<commentable>``.
A rebuild (``RedisRebuild``) folds each batch per comment first and merges the result instead.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from importlib import resources
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, ResponseError

from projectors.base import CannotApply
from projectors.compaction import CommentChange, compact
from projectors.generations import Generations, scan_batches
from projectors.ranking import SORTS
from schemas.envelope import Envelope
from schemas.events import CommentDeleted, CommentEdited, CommentPosted


def _script(name: str) -> str:
    folder = resources.files("projectors")
    return (folder / "redis_rank.lua").read_text() + (folder / name).read_text()


SCRIPT = _script("redis_scores.lua")
MERGE_SCRIPT = _script("redis_merge.lua")
RERANK_SCRIPT = _script("redis_rerank.lua")
_RAISE = (
    "if tonumber(ARGV[1]) > tonumber(redis.call('GET', KEYS[1]) or '0') then"
    " redis.call('SET', KEYS[1], ARGV[1]) end"
)
_KIND = {CommentPosted: "P", CommentEdited: "E", CommentDeleted: "D"}
_CALLS_PER_PIPELINE = 500
_msgpack = msgspec.msgpack.Encoder()


def prefix(generation: str, commentable_id: str) -> str:
    """The key prefix of one commentable in one generation."""
    return f"tally:g{generation}:{{{commentable_id}}}:"


def where_key(generation: str, comment_id: object) -> str:
    """The key holding a comment's commentable."""
    return f"tally:g{generation}:where:{comment_id}"


def checkpoint_key(generation: str) -> str:
    """The key holding the highest position the Redis projection applied."""
    return f"tally:g{generation}:checkpoint"


def live_channel(commentable_id: str) -> str:
    """The pub/sub channel with a commentable's score changes."""
    return f"tally:live:{commentable_id}"


def _ranking_keys(base: str) -> list[str]:
    return [f"{base}rank:{sort}" for sort in SORTS]


async def _run_script(
    redis: Redis, sha: str, calls: Sequence[tuple[list[str], Sequence[Any]]]
) -> list[Any]:
    results: list[Any] = []
    for start in range(0, len(calls), _CALLS_PER_PIPELINE):
        async with redis.pipeline(transaction=False) as pipe:
            for keys, args in calls[start : start + _CALLS_PER_PIPELINE]:
                pipe.evalsha(sha, len(keys), *keys, *args)
            results += await pipe.execute()
    return results


async def _record(redis: Redis, generation: str, envelopes: Sequence[Envelope]) -> None:
    """Where each new comment lives, and the checkpoint (raised to the batch's last position)."""
    if not envelopes:
        return
    async with redis.pipeline(transaction=False) as pipe:
        for envelope in envelopes:
            if isinstance(envelope.event, CommentPosted):
                pipe.set(
                    where_key(generation, envelope.event.comment_id), envelope.event.commentable_id
                )
        last = max(e.position for e in envelopes)
        pipe.eval(_RAISE, 1, checkpoint_key(generation), str(last))
        await pipe.execute()


class RedisScoresProjection:
    """Counters and rankings in Redis, written to the live generation (and a retiring one)."""

    name = "redis"

    def __init__(self, redis: Redis, generation: str = "1") -> None:
        self._redis = redis
        self.generations = Generations(redis, generation)
        self._sha = ""

    async def setup(self) -> None:
        """Load the Lua script."""
        self._sha = await self._redis.script_load(SCRIPT)

    async def apply(self, envelopes: Sequence[Envelope]) -> None:
        """Apply to every generation the pointer says is written; publish from the live one."""
        for index, generation in enumerate(await self.generations.written()):
            await self.apply_to(generation, envelopes, publish=index == 0)

    async def apply_to(
        self, generation: str, envelopes: Sequence[Envelope], publish: bool = True
    ) -> None:
        """One Lua call per commentable in the batch, sent in one pipeline."""
        by_commentable: dict[str, list[Envelope]] = defaultdict(list)
        for envelope in envelopes:
            by_commentable[envelope.event.commentable_id].append(envelope)
        calls = [self._call(generation, c, events, publish) for c, events in by_commentable.items()]
        try:
            try:
                await _run_script(self._redis, self._sha, calls)
            except NoScriptError:
                await self.setup()
                await _run_script(self._redis, self._sha, calls)
        except ResponseError as exc:
            # A script error is about the data of these events: find the one that fails.
            raise CannotApply(envelopes[0], f"redis script failed: {exc}") from exc
        await _record(self._redis, generation, envelopes)

    async def close(self) -> None:
        """Nothing to release: the client belongs to the caller."""

    @staticmethod
    def _call(
        generation: str, commentable_id: str, envelopes: list[Envelope], publish: bool
    ) -> tuple[list[str], list[str]]:
        base = prefix(generation, commentable_id)
        keys = _ranking_keys(base)
        index: dict[str, int] = {}
        args: list[str] = [live_channel(commentable_id) if publish else ""]
        for envelope in envelopes:
            event = envelope.event
            comment_id = str(event.comment_id)
            if comment_id not in index:
                index[comment_id] = len(keys) + 1
                keys += [f"{base}c:{comment_id}", f"{base}v:{comment_id}"]
            kind = _KIND.get(type(event), "V")
            value = getattr(event, "value", 0)
            previous = getattr(event, "previous", 0)
            user = getattr(event, "user_id", "")
            created = int(envelope.occurred_at.timestamp() * 1000)
            fields = (index[comment_id], kind, envelope.position, value, previous, created)
            args += [*map(str, fields), user, comment_id]
        return keys, args


class RedisRebuild:
    """Fills one generation fast: each batch is folded per comment, then merged in Lua.

    Idempotent like the live projection: a comment's change is skipped when its stored position
    is at or past the change, and a comment part-applied by an interrupted run gets its events
    one at a time through the live script (which skips what it has).
    """

    def __init__(self, redis: Redis, generation: str) -> None:
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
        async for keys in scan_batches(self._redis, f"tally:g{self.generation}:where:*"):
            commentables = await self._redis.mget(keys)
            by_commentable: dict[str, list[str]] = defaultdict(list)
            for key, commentable in zip(keys, commentables, strict=True):
                if commentable is not None:
                    by_commentable[commentable.decode()].append(key.decode().rsplit(":", 1)[1])
            calls = []
            for commentable_id, comment_ids in by_commentable.items():
                base = prefix(self.generation, commentable_id)
                keys_ = _ranking_keys(base) + [f"{base}c:{c}" for c in comment_ids]
                calls.append((keys_, comment_ids))
            await _run_script(self._redis, self._rerank_sha, calls)
            ranked += sum(len(c) for _, c in calls)
        self.ranking = True
        return ranked

    async def apply(self, envelopes: Sequence[Envelope]) -> None:
        """Merge the batch's changes; apply part-applied comments event by event."""
        by_commentable: dict[str, list[tuple[str, CommentChange]]] = defaultdict(list)
        for comment_id, change in compact(envelopes).items():
            by_commentable[change.commentable_id].append((comment_id, change))
        calls = [self._call(c, changes) for c, changes in by_commentable.items()]
        try:
            results = await _run_script(self._redis, self._sha, calls)
        except NoScriptError:
            await self.setup()
            results = await _run_script(self._redis, self._sha, calls)
        redo = {cid.decode() for found in results for cid in found}
        if redo:
            again = [e for e in envelopes if str(e.event.comment_id) in redo]
            await self._events.apply_to(self.generation, again, publish=False)
        await _record(self._redis, self.generation, envelopes)

    def _call(
        self, commentable_id: str, changes: Iterable[tuple[str, CommentChange]]
    ) -> tuple[list[str], list[Any]]:
        base = prefix(self.generation, commentable_id)
        keys = _ranking_keys(base)
        packed: list[list[object]] = []
        for comment_id, c in changes:
            packed.append(
                [
                    len(keys) + 1,
                    comment_id,
                    c.first,
                    c.last,
                    c.created_ms,
                    int(c.deleted),
                    c.up,
                    c.down,
                    [x for pair in c.votes.items() for x in pair],
                ]
            )
            keys += [f"{base}c:{comment_id}", f"{base}v:{comment_id}"]
        args = ["1" if self.ranking else "0", _msgpack.encode(packed)]
        return keys, args
