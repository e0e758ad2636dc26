"""The Redis projection: live counters, per-user votes and rankings per commentable.

Keys (``g`` is the generation, so a rebuild can fill a new keyspace and switch):

- ``tally:g<g>:{<commentable>}:c:<comment>``: hash ``up down score pos created deleted``
- ``tally:g<g>:{<commentable>}:v:<comment>``: hash user -> vote (-1 or 1)
- ``tally:g<g>:{<commentable>}:rank:<sort>``: sorted sets for top, new, best, controversial, hot
- ``tally:g<g>:where:<comment>``: the comment's commentable (so a reader can find the keys)
- ``tally:g<g>:checkpoint``: the highest position applied (only ever raised)

One Lua call per batch and commentable applies the events, checks and stores each comment's
last position in the same call, and publishes every score change on ``tally:live:<commentable>``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from importlib import resources

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, ResponseError

from projectors.base import CannotApply
from projectors.ranking import SORTS
from schemas.envelope import Envelope
from schemas.events import CommentDeleted, CommentEdited, CommentPosted

SCRIPT = (resources.files("projectors") / "redis_scores.lua").read_text()
_RAISE = (
    "if tonumber(ARGV[1]) > tonumber(redis.call('GET', KEYS[1]) or '0') then"
    " redis.call('SET', KEYS[1], ARGV[1]) end"
)
_KIND = {CommentPosted: "P", CommentEdited: "E", CommentDeleted: "D"}


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


class RedisScoresProjection:
    """Counters and rankings in Redis."""

    name = "redis"

    def __init__(self, redis: Redis, generation: str = "1") -> None:
        self._redis = redis
        self.generation = generation
        self._sha = ""

    async def setup(self) -> None:
        """Load the Lua script."""
        self._sha = await self._redis.script_load(SCRIPT)

    async def apply(self, envelopes: Sequence[Envelope]) -> None:
        """One Lua call per commentable in the batch, sent in one pipeline."""
        by_commentable: dict[str, list[Envelope]] = defaultdict(list)
        for envelope in envelopes:
            by_commentable[envelope.event.commentable_id].append(envelope)
        calls = [self._call(c, events) for c, events in by_commentable.items()]
        try:
            await self._run(calls)
        except NoScriptError:
            await self.setup()
            await self._run(calls)
        except ResponseError as exc:
            # A script error is about the data of these events: find the one that fails.
            raise CannotApply(envelopes[0], f"redis script failed: {exc}") from exc
        if not envelopes:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for envelope in envelopes:
                if isinstance(envelope.event, CommentPosted):
                    pipe.set(
                        where_key(self.generation, envelope.event.comment_id),
                        envelope.event.commentable_id,
                    )
            last = max(e.position for e in envelopes)
            pipe.eval(_RAISE, 1, checkpoint_key(self.generation), str(last))
            await pipe.execute()

    async def close(self) -> None:
        """Nothing to release: the client belongs to the caller."""

    async def _run(self, calls: list[tuple[list[str], list[str]]]) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                pipe.evalsha(self._sha, len(keys), *keys, *args)
            await pipe.execute()

    def _call(self, commentable_id: str, envelopes: list[Envelope]) -> tuple[list[str], list[str]]:
        base = prefix(self.generation, commentable_id)
        keys = [f"{base}rank:{sort}" for sort in SORTS]
        index: dict[str, int] = {}
        args: list[str] = [live_channel(commentable_id)]
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
