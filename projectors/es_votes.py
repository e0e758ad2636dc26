"""The Elasticsearch vote analytics index: one document per vote event.

The document id is the event id, so a replay or a redelivery writes the same document again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from elasticsearch import AsyncElasticsearch

from projectors.base import CannotApply
from projectors.es_indices import VOTES_ALIAS, VOTES_MAPPING, ensure_index, ensure_votes_template
from schemas.envelope import Envelope
from schemas.events import VoteCast, VoteChanged, VoteRetracted


def vote_document(envelope: Envelope) -> dict[str, Any] | None:
    """The analytics document of a vote event (``None`` for other events)."""
    event = envelope.event
    if not isinstance(event, VoteCast | VoteChanged | VoteRetracted):
        return None
    return {
        "@timestamp": envelope.occurred_at.isoformat(),
        "event_id": str(envelope.event_id),
        "event_type": type(event).__name__,
        "comment_id": str(event.comment_id),
        "commentable_id": event.commentable_id,
        "user_id": event.user_id,
        "value": event.value,
        "previous": event.previous,
        "delta": event.delta,
        "position": envelope.position,
    }


class EsVotesProjection:
    """Vote events for analysts."""

    name = "votes"

    def __init__(self, es: AsyncElasticsearch, alias: str = VOTES_ALIAS, version: int = 1):
        self._es = es
        self.alias = alias
        self._version = version

    async def setup(self) -> None:
        """Create the template, the versioned index and its alias if missing."""
        await ensure_votes_template(self._es)
        await ensure_index(self._es, self.alias, self._version, VOTES_MAPPING)

    async def apply(self, envelopes: Sequence[Envelope]) -> None:
        """Index every vote event of the batch under its event id."""
        operations: list[dict[str, Any]] = []
        sources = []
        for envelope in envelopes:
            document = vote_document(envelope)
            if document is not None:
                operations += [
                    {"index": {"_index": self.alias, "_id": document["event_id"]}},
                    document,
                ]
                sources.append(envelope)
        if not operations:
            return
        reply = await self._es.bulk(operations=operations)
        if reply["errors"]:
            for item, envelope in zip(reply["items"], sources, strict=True):
                if item["index"].get("status", 200) >= 300:
                    raise CannotApply(envelope, f"elasticsearch refused: {item['index']}")

    async def close(self) -> None:
        """Nothing to release: the client belongs to the caller."""
