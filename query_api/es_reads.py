"""Reads from the Elasticsearch comment read model: bodies, search, and scores as a fallback."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from elasticsearch import AsyncElasticsearch

from projectors.es_indices import COMMENTS_ALIAS


class EsReads:
    """The comment index, read side."""

    def __init__(self, es: AsyncElasticsearch, alias: str = COMMENTS_ALIAS) -> None:
        self.es = es
        self.alias = alias

    async def comments(self, comment_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The stored documents of these comments (missing ones are left out)."""
        if not comment_ids:
            return {}
        found = await self.es.mget(index=self.alias, ids=list(comment_ids))
        return {d["_id"]: d["_source"] for d in found["docs"] if d.get("found")}

    async def search(
        self, text: str, commentable_id: str | None, limit: int
    ) -> list[dict[str, Any]]:
        """Comments whose content matches ``text`` (user syntax is safe: simple_query_string)."""
        filters: list[dict[str, Any]] = [{"term": {"deleted": False}}]
        if commentable_id:
            filters.append({"term": {"commentable_id": commentable_id}})
        reply = await self.es.search(
            index=self.alias,
            query={
                "bool": {
                    "must": [
                        {
                            "simple_query_string": {
                                "query": text,
                                "fields": ["content"],
                                "default_operator": "and",
                            }
                        }
                    ],
                    "filter": filters,
                }
            },
            size=limit,
        )
        return [hit["_source"] for hit in reply["hits"]["hits"]]
