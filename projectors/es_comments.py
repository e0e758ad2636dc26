"""The Elasticsearch comment read model: one document per comment.

Order-safe and idempotent by external versioning: a document's version is the position of the
last event folded into it, so a stale or repeated write is rejected by Elasticsearch (409) and
the newer document stays. Events at or below the stored position are skipped before writing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import msgspec
from elasticsearch import AsyncElasticsearch

from projectors.base import CannotApply
from projectors.es_indices import COMMENTS_ALIAS, COMMENTS_MAPPING, ensure_index
from projectors.fold import CommentView, evolve
from schemas.envelope import Envelope


class EsCommentsProjection:
    """Comments, with their counts, for search and lists."""

    name = "comments"

    def __init__(self, es: AsyncElasticsearch, alias: str = COMMENTS_ALIAS, version: int = 1):
        self._es = es
        self.alias = alias
        self._version = version

    async def setup(self) -> None:
        """Create the versioned index and its alias if missing."""
        await ensure_index(self._es, self.alias, self._version, COMMENTS_MAPPING)

    async def apply(self, envelopes: Sequence[Envelope]) -> None:
        """Fold the batch into the stored documents and write the changed ones."""
        if not envelopes:
            return
        ids = list(dict.fromkeys(str(e.event.comment_id) for e in envelopes))
        found = await self._es.mget(index=self.alias, ids=ids)
        views: dict[UUID, CommentView | None] = {}
        for doc in found["docs"]:
            if doc.get("found"):
                view = msgspec.convert(doc["_source"], CommentView, strict=False)
                views[view.comment_id] = view
        changed: set[UUID] = set()
        for envelope in envelopes:
            comment_id = envelope.event.comment_id
            before = views.get(comment_id)
            position = before.position if before else 0
            views[comment_id] = evolve(before, envelope)
            if envelope.position > position:
                changed.add(comment_id)
        if changed:
            await self._write([v for c, v in views.items() if c in changed and v], envelopes)

    async def close(self) -> None:
        """Nothing to release: the client belongs to the caller."""

    async def _write(self, views: list[CommentView], envelopes: Sequence[Envelope]) -> None:
        operations: list[dict[str, Any]] = []
        for view in views:
            operations.append(
                {
                    "index": {
                        "_index": self.alias,
                        "_id": str(view.comment_id),
                        "version": view.position,
                        "version_type": "external",
                    }
                }
            )
            operations.append(msgspec.to_builtins(view))
        reply = await self._es.bulk(operations=operations)
        if not reply["errors"]:
            return
        for item, view in zip(reply["items"], views, strict=True):
            result = item["index"]
            if result.get("status", 200) >= 300 and result.get("status") != 409:
                culprit = next(e for e in envelopes if e.event.comment_id == view.comment_id)
                raise CannotApply(culprit, f"elasticsearch refused the document: {result}")
