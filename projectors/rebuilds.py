"""What a rebuild needs from each projection: a target beside the live one, and a switch.

- Redis: a new generation (``projectors.generations``); the switch moves the pointer.
- Elasticsearch: a new versioned index; the switch moves the alias in one ``update_aliases``.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

import structlog
from elasticsearch import AsyncElasticsearch, NotFoundError

from event_store.bulk_read import ENTRIES, ENVELOPES, LogShape
from kernel.redis_client import AnyRedis
from projectors import es_indices, redis_scores
from projectors.base import Projection
from projectors.generations import GRACE_SECONDS, Generations, next_generation
from projectors.redis_scores import RedisRebuild
from schemas.envelope import Envelope, LogEntry, Recorded

log = structlog.get_logger(__name__)

E = TypeVar("E", bound=Recorded)


class Rebuild(Protocol[E]):
    """One projection being rebuilt beside its live self, from events read as ``E``."""

    name: str
    batch_size: int
    log: LogShape[E]  # what it reads of each event

    async def begin(self, resume: str | None) -> str:
        """Prepare a new target (or reopen ``resume``); return its name."""
        ...

    def stage(self, envelopes: Sequence[E]) -> Callable[[], Awaitable[None]]:
        """Do a batch's own work now (folding, encoding) and return its write to the target,
        idempotent like every projection. The caller starts each write when the one before
        has finished, so writes land in order, and stages the next batch meanwhile."""
        ...

    async def bulk_done(self) -> None:
        """The first pass reached the head: finish what was deferred during it."""
        ...

    async def switch(self) -> str:
        """Make the target live in one atomic step; return what was live before."""
        ...

    async def finish(self, old: str, keep: bool) -> None:
        """After the switch: retire the old target, and drop it unless ``keep``."""
        ...


class RedisGenerationRebuild:
    """Builds a new Redis generation and moves the pointer to it."""

    name = "redis"
    # Redis's work per batch goes with the comments the batch touches, not its events: larger
    # batches fold more votes per comment. At 200k events a rebuild peaks near 320 MB (read as
    # LogEntry, one batch written, one staged, one read ahead; docs/performance.md).
    batch_size = 200_000
    log = ENTRIES  # counts need no more than the position, time and event

    def __init__(self, redis: AnyRedis, base: str) -> None:
        self._generations = Generations(redis, base)
        self._redis = redis
        self._target: RedisRebuild | None = None

    async def begin(self, resume: str | None) -> str:
        """A fresh generation after the live one, or the one an interrupted run was filling."""
        written = await self._generations.written()
        if len(written) > 1:  # an earlier rebuild stopped during its grace period
            await self._generations.retired()
        name = resume or next_generation(self._generations.base, written[0])
        if resume is None:
            await self._generations.drop(name)  # leftovers of a run that never recorded itself
        self._target = RedisRebuild(self._redis, name)
        await self._target.setup()
        return name

    def stage(self, envelopes: Sequence[LogEntry]) -> Callable[[], Awaitable[None]]:
        """Fold a batch now; the write merges it into the new generation."""
        assert self._target is not None, "begin() first"
        return self._target.stage(envelopes)

    async def bulk_done(self) -> None:
        """Rank every comment once; later batches rank as they go."""
        assert self._target is not None, "begin() first"
        ranked = await self._target.rank_all()
        log.info("generation_ranked", generation=self._target.generation, comments=ranked)

    async def switch(self) -> str:
        """Point readers and the live projector at the new generation, marked whole."""
        assert self._target is not None, "begin() first"
        await redis_scores.mark_intact(self._redis, self._target.generation)
        return await self._generations.switch(self._target.generation)

    async def finish(self, old: str, keep: bool) -> None:
        """Keep the old generation updated for the readers' cache time, then let it go."""
        await asyncio.sleep(GRACE_SECONDS)
        await self._generations.retired()
        if not keep and self._target is not None and old != self._target.generation:
            dropped = await self._generations.drop(old)
            log.info("generation_dropped", generation=old, keys=dropped)


class IndexRebuild:
    """Builds a new versioned Elasticsearch index and swaps the alias to it."""

    batch_size = 2_000  # Elasticsearch bulk requests stay small
    log = ENVELOPES

    def __init__(
        self,
        name: str,
        es: AsyncElasticsearch,
        alias: str,
        spec: es_indices.IndexSpec,
        projection_on: Callable[[str], Projection],
    ) -> None:
        self.name = name
        self._es = es
        self._alias = alias
        self._spec = spec
        self._projection_on = projection_on
        self._index = ""
        self._projection: Projection | None = None

    async def live_index(self) -> str | None:
        """The index behind the alias, if there is one."""
        try:
            found = await self._es.indices.get_alias(name=self._alias)
        except NotFoundError:
            return None
        return sorted(found.body)[-1] if found.body else None

    async def begin(self, resume: str | None) -> str:
        """A new index one version above the live one, or the one being filled."""
        if resume is not None:
            self._index = resume
        else:
            live = await self.live_index()
            version = int(live.rsplit("-v", 1)[1]) + 1 if live and "-v" in live else 1
            self._index = f"{self._alias}-v{version}"
            if await self._es.indices.exists(index=self._index):
                await self._es.indices.delete(index=self._index)
            await self._es.indices.create(
                index=self._index, mappings=self._spec.mappings, settings=self._spec.settings
            )
        self._projection = self._projection_on(self._index)
        return self._index

    def stage(self, envelopes: Sequence[Envelope]) -> Callable[[], Awaitable[None]]:
        """The write of a batch into the new index (nothing to do before it)."""
        assert self._projection is not None, "begin() first"
        return functools.partial(self._projection.apply, envelopes)

    async def bulk_done(self) -> None:
        """Nothing deferred."""

    async def switch(self) -> str:
        """Move the alias in one request: readers see the old index or the new, never none."""
        await self._es.indices.refresh(index=self._index)
        await es_indices.mark_intact(self._es, self._index)
        live = await self.live_index()
        if live == self._index:
            return live
        actions: list[dict[str, Any]] = [{"add": {"index": self._index, "alias": self._alias}}]
        if live is not None:
            actions.insert(0, {"remove": {"index": live, "alias": self._alias}})
        elif await self._es.indices.exists(index=self._alias):
            # The index was lost and a write recreated the alias's name as a plain index.
            actions.insert(0, {"remove_index": {"index": self._alias}})
        await self._es.indices.update_aliases(actions=actions)
        return live or self._index

    async def finish(self, old: str, keep: bool) -> None:
        """Delete the old index unless asked to keep it."""
        if not keep and old != self._index:
            await self._es.indices.delete(index=old)
            log.info("index_dropped", index=old)
