"""The Elasticsearch comment read model: one document per comment.

Order-safe and idempotent by external versioning: a document's version is the position of the
last event folded into it, so a stale or repeated write is rejected by Elasticsearch (409) and
the newer document stays. Events at or below the stored position are skipped before writing.
The reconciler's repairs use ``external_gte``: the fold at the stored position may replace a
wrong document of the same version, never a newer one.

An edit, delete or vote of a comment the index does not have means the index lost its data:
that document is not written (it would hold only the counts of this batch), and
``ReadModelLost`` asks for a rebuild. So does an index without its ``intact`` marker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

import msgspec
from elasticsearch import AsyncElasticsearch

from projectors.base import CannotApply, ReadModelLost
from projectors.es_indices import (
    COMMENTS_ALIAS,
    COMMENTS_INDEX,
    bulk_write,
    ensure_index,
    is_intact,
    mark_intact,
)
from projectors.fold import CommentView, evolve
from projectors.judging import CommentHistory, Finding, StoredComment, judge
from schemas.envelope import Envelope
from schemas.events import CommentPosted


class EsCommentsProjection:
    """Comments, with their counts, for search and lists."""

    name = "comments"

    def __init__(self, es: AsyncElasticsearch, alias: str = COMMENTS_ALIAS, version: int = 1):
        self._es = es
        self.alias = alias
        self._version = version

    async def setup(self) -> None:
        """Create the versioned index and its alias if missing."""
        await ensure_index(self._es, self.alias, self._version, COMMENTS_INDEX)

    async def intact(self) -> bool:
        """Is the index behind the alias the one this projection filled?"""
        return await is_intact(self._es, self.alias)

    async def mark_intact(self) -> None:
        """Mark the index as whole (it is filled from nothing)."""
        await mark_intact(self._es, self.alias)

    async def apply(self, envelopes: Sequence[Envelope]) -> None:
        """Fold the batch into the stored documents and write the changed ones."""
        if not envelopes:
            return
        views = await self._stored([str(e.event.comment_id) for e in envelopes])
        changed: set[UUID] = set()
        lost: set[UUID] = set()
        for envelope in envelopes:
            comment_id = envelope.event.comment_id
            before = views.get(comment_id)
            if before is None and not isinstance(envelope.event, CommentPosted):
                lost.add(comment_id)
                continue
            position = before.position if before else 0
            views[comment_id] = evolve(before, envelope)
            if envelope.position > position:
                changed.add(comment_id)
        changed -= lost
        if changed:
            written = [v for c, v in views.items() if c in changed and v]
            culprits = await self._write(written, "external")
            if culprits:
                view, result = culprits[0]
                culprit = next(e for e in envelopes if e.event.comment_id == view.comment_id)
                raise CannotApply(culprit, f"elasticsearch refused the document: {result}")
        if lost:
            raise ReadModelLost(f"the comment index lost comments {sorted(map(str, lost))[:5]}")

    async def reconcile(
        self, histories: Mapping[str, CommentHistory], low_water: int, repair: bool
    ) -> list[Finding]:
        """Compare each document with the fold of its comment's history; repair when asked."""
        views = await self._stored(list(histories))
        findings = []
        for comment_id, history in histories.items():
            await asyncio.sleep(0)  # the live batches go on between comments
            view = views.get(UUID(comment_id))
            stored = None
            if view is not None:
                stored = StoredComment(
                    position=view.position,
                    up=view.up,
                    down=view.down,
                    deleted=view.deleted,
                    content=view.content,
                )
            detail = judge(stored, history, low_water)
            if detail:
                findings.append(Finding(self.name, comment_id, detail))
        if repair and findings:
            truths = [histories[f.comment_id].truth_at() for f in findings]
            await self._write([t.view for t in truths if t is not None], "external_gte")
        return findings

    async def close(self) -> None:
        """Nothing to release: the client belongs to the caller."""

    async def _stored(self, comment_ids: list[str]) -> dict[UUID, CommentView | None]:
        ids = list(dict.fromkeys(comment_ids))
        found = await self._es.mget(index=self.alias, ids=ids)
        views: dict[UUID, CommentView | None] = {}
        for doc in found["docs"]:
            if doc.get("found"):
                view = msgspec.convert(doc["_source"], CommentView, strict=False)
                views[view.comment_id] = view
        return views

    async def _write(
        self, views: list[CommentView], version_type: str
    ) -> list[tuple[CommentView, dict[str, Any]]]:
        """Index ``views``; return those refused for good (with the reason)."""
        operations = [
            (
                {
                    "index": {
                        "_index": self.alias,
                        "_id": str(view.comment_id),
                        "version": view.position,
                        "version_type": version_type,
                    }
                },
                msgspec.to_builtins(view),
            )
            for view in views
        ]
        if not operations:
            return []
        return [(views[n], result) for n, result in await bulk_write(self._es, operations)]
