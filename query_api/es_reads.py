"""Reads from the Elasticsearch comment read model: bodies, search, and scores as a fallback."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from elasticsearch import AsyncElasticsearch

from projectors.es_indices import COMMENTS_ALIAS


class EsReads:
    """The comment index, read side."""

    def __init__(
        self, es: AsyncElasticsearch, alias: str = COMMENTS_ALIAS, cache_seconds: float = 5.0
    ) -> None:
        self.es = es
        self.alias = alias
        self._cache_s = cache_seconds
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}

    async def comments(
        self, comment_ids: Sequence[str], fresh: bool = False
    ) -> dict[str, dict[str, Any]]:
        """The stored documents of these comments (missing ones are left out).

        Bodies are cached for a few seconds (live counts come from Redis anyway); ``fresh``
        skips the cache, for reads that wait for a position.
        """
        now = time.monotonic()
        found: dict[str, dict[str, Any]] = {}
        if not fresh:
            for comment_id in comment_ids:
                hit = self._cache.get(comment_id)
                if hit is not None and hit[0] > now:
                    found[comment_id] = hit[1]
        missing = [c for c in comment_ids if c not in found]
        if missing:
            reply = await self.es.mget(index=self.alias, ids=missing)
            if len(self._cache) > 100_000:
                self._cache.clear()
            for doc in reply["docs"]:
                if doc.get("found"):
                    found[doc["_id"]] = doc["_source"]
                    self._cache[doc["_id"]] = (now + self._cache_s, doc["_source"])
        return found

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
