"""The Elasticsearch vote analytics index: one document per vote event.

The document id is the event id, so a replay, a redelivery or a repair writes the same document
again. The index keeps no per-comment position, so its loss is noticed by its ``intact`` marker
and the reconciler looks for missing documents. Votes older than the retention are not kept
(``projectors.es_votes_retention``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from elasticsearch import AsyncElasticsearch

from projectors.base import CannotApply
from projectors.es_indices import (
    VOTES_ALIAS,
    VOTES_INDEX,
    bulk_write,
    ensure_index,
    ensure_votes_template,
    is_intact,
    mark_intact,
)
from projectors.es_votes_retention import within
from projectors.judging import CommentHistory, Finding
from schemas.envelope import Envelope
from schemas.events import VoteEvent


def vote_document(envelope: Envelope) -> dict[str, Any] | None:
    """The analytics document of a vote event (``None`` for other events)."""
    event = envelope.event
    if not isinstance(event, VoteEvent):
        return None
    return {
        "@timestamp": envelope.occurred_at.isoformat(),
        "event_id": str(envelope.event_id),
        "event_type": type(event).__name__,
        "comment_id": str(event.comment_id),
        "commentable_id": event.commentable_id,
        "parent_id": str(event.parent_id) if event.parent_id else None,
        "comment_author_id": event.comment_author_id,
        "user_id": event.user_id,
        "value": event.value,
        "previous": event.previous,
        "delta": event.delta,
        "position": envelope.position,
    }


class EsVotesProjection:
    """Vote events for analysts."""

    name = "votes"

    def __init__(
        self,
        es: AsyncElasticsearch,
        alias: str = VOTES_ALIAS,
        version: int = 1,
        retention_days: int = 0,
    ):
        self._es = es
        self.alias = alias
        self._version = version
        self._retention_days = retention_days

    def _kept(self, envelope: Envelope) -> bool:
        """A vote event whose document this index holds (recent enough, see retention)."""
        return isinstance(envelope.event, VoteEvent) and within(self._retention_days, envelope)

    async def setup(self) -> None:
        """Create the template, the versioned index and its alias if missing."""
        await ensure_votes_template(self._es)
        await ensure_index(self._es, self.alias, self._version, VOTES_INDEX)

    async def intact(self) -> bool:
        """Is the index behind the alias the one this projection filled?"""
        return await is_intact(self._es, self.alias)

    async def mark_intact(self) -> None:
        """Mark the index as whole (it is filled from nothing)."""
        await mark_intact(self._es, self.alias)

    async def apply(self, envelopes: Sequence[Envelope]) -> None:
        """Index every vote event of the batch under its event id."""
        sources = [e for e in envelopes if self._kept(e)]
        refused = await self._index(sources)
        if refused:
            envelope, result = refused[0]
            raise CannotApply(envelope, f"elasticsearch refused: {result}")

    async def reconcile(
        self, histories: Mapping[str, CommentHistory], low_water: int, repair: bool
    ) -> list[Finding]:
        """Find vote events at or below ``low_water`` without their document; index them
        (the events of each history: not those folded into its kept part)."""
        due = [
            e
            for history in histories.values()
            for e in history.events
            if e.position <= low_water and self._kept(e)
        ]
        if not due:
            return []
        found = await self._es.mget(index=self.alias, ids=[str(e.event_id) for e in due])
        have = {d["_id"] for d in found["docs"] if d.get("found")}
        missing = [e for e in due if str(e.event_id) not in have]
        if repair and missing:
            await self._index(missing)
        return [
            Finding(self.name, str(e.event.comment_id), f"no document for vote event {e.event_id}")
            for e in missing
        ]

    async def _index(self, envelopes: Sequence[Envelope]) -> list[tuple[Envelope, Any]]:
        """Index the vote documents of ``envelopes``; return those refused for good."""
        operations: list[tuple[dict[str, Any], dict[str, Any]]] = []
        for envelope in envelopes:
            document = vote_document(envelope)
            assert document is not None
            operations.append(
                ({"index": {"_index": self.alias, "_id": document["event_id"]}}, document)
            )
        if not operations:
            return []
        return [(envelopes[n], result) for n, result in await bulk_write(self._es, operations)]

    async def close(self) -> None:
        """Nothing to release: the client belongs to the caller."""
