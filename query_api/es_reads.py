"""Reads from the Elasticsearch comment read model: bodies, search, and scores as a fallback.

Bodies come from ``mget``, which is realtime: a document is there as soon as the projector
wrote it. Search comes from ``_search``, which sees what the last refresh made visible; a
search with ``min_position`` asks for a refresh that started after the projection reached it
(``query_api.refresher``).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

import msgspec
from elasticsearch import AsyncElasticsearch

from kernel.bounded_cache import BoundedCache
from projectors.es_indices import COMMENTS_ALIAS
from query_api.refresher import Refresher

BODY_CACHE_BYTES = 32 * 1024 * 1024  # per process
SearchSort = Literal["relevance", "new"]
# simple_query_string operators a reader may use: +, |, -, "phrases", (groups), escapes. No
# prefix*, fuzzy~ or slop: each expands into many terms the engine must look up.
SEARCH_FLAGS = "AND|OR|NOT|PHRASE|PRECEDENCE|WHITESPACE|ESCAPE"
_SORTS: dict[str, list[dict[str, str]]] = {
    "relevance": [{"_score": "desc"}, {"comment_id": "asc"}],
    "new": [{"created_at": "desc"}, {"comment_id": "asc"}],
}
HIGHLIGHT: dict[str, Any] = {
    "encoder": "html",  # the comment's own text is escaped; only the tags are markup
    "pre_tags": ["<em>"],
    "post_tags": ["</em>"],
    "fields": {"content": {"number_of_fragments": 3, "fragment_size": 150}},
}


class SearchQuery(msgspec.Struct, frozen=True, kw_only=True):
    """What a reader searches for."""

    text: str
    commentable_id: str | None = None
    author_id: str | None = None
    since: datetime | None = None  # created at or after
    until: datetime | None = None  # created before
    sort: SearchSort = "relevance"

    def digest(self) -> str:
        """Names this search, so a cursor cannot be used with another one."""
        return hashlib.sha256(msgspec.json.encode(self)).hexdigest()[:16]


class SearchHit(msgspec.Struct, frozen=True):
    """One found comment: its stored document, highlighted fragments and sort values."""

    document: dict[str, Any]
    highlights: list[str]
    sort: list[Any]


def search_body(query: SearchQuery, size: int, after: list[Any] | None = None) -> dict[str, Any]:
    """The ``_search`` request for ``query``: matching, not deleted, filtered, sorted with the
    comment id as tiebreaker, highlighted, starting after the sort values ``after``."""
    filters: list[dict[str, Any]] = [{"term": {"deleted": False}}]
    if query.commentable_id:
        filters.append({"term": {"commentable_id": query.commentable_id}})
    if query.author_id:
        filters.append({"term": {"author_id": query.author_id}})
    if query.since or query.until:
        # The index keeps times to the millisecond: a comment's own created_at (microseconds)
        # as ``since`` must find it.
        bounds: dict[str, str] = {}
        if query.since:
            bounds["gte"] = _to_milliseconds(query.since)
        if query.until:
            bounds["lt"] = _to_milliseconds(query.until)
        filters.append({"range": {"created_at": bounds}})
    match = {
        "simple_query_string": {
            "query": query.text,
            "fields": ["content"],
            "default_operator": "and",
            "flags": SEARCH_FLAGS,
        }
    }
    body: dict[str, Any] = {
        "query": {"bool": {"must": [match], "filter": filters}},
        "sort": _SORTS[query.sort],
        "size": size,
        "highlight": HIGHLIGHT,
        "track_total_hits": False,
    }
    if after is not None:
        body["search_after"] = after
    return body


def _to_milliseconds(moment: datetime) -> str:
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000).isoformat()


class EsReads:
    """The comment index, read side."""

    def __init__(
        self,
        es: AsyncElasticsearch,
        alias: str = COMMENTS_ALIAS,
        cache_seconds: float = 5.0,
        refresh_interval: float = 0.05,
    ) -> None:
        self.es = es
        self.alias = alias
        self._cache_s = cache_seconds
        self._cache: BoundedCache[str, dict[str, Any]] = BoundedCache(BODY_CACHE_BYTES)
        self.refresher = Refresher(lambda: es.indices.refresh(index=alias), refresh_interval)

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
                hit = self._cache.get(comment_id, now)
                if hit is not None:
                    found[comment_id] = hit
        missing = [c for c in comment_ids if c not in found]
        if missing:
            reply = await self.es.mget(index=self.alias, ids=missing)
            for doc in reply["docs"]:
                if doc.get("found"):
                    source = doc["_source"]
                    found[doc["_id"]] = source
                    size = 512 + len(source.get("content") or "") * 4  # at most 4 bytes a char
                    self._cache.put(doc["_id"], source, size, now + self._cache_s)
        return found

    async def search(
        self,
        query: SearchQuery,
        limit: int,
        after: list[Any] | None = None,
        visible_since: float | None = None,
    ) -> tuple[list[SearchHit], bool]:
        """Up to ``limit`` hits of ``query`` after the sort values ``after``, and whether there
        are more. ``visible_since``: first wait for a refresh that started after this moment
        (``time.monotonic``), so that everything written before it is found."""
        if visible_since is not None:
            await self.refresher.covering(visible_since)
        reply = await self.es.search(index=self.alias, **search_body(query, limit + 1, after))
        hits = [
            SearchHit(hit["_source"], hit.get("highlight", {}).get("content", []), hit["sort"])
            for hit in reply["hits"]["hits"]
        ]
        return hits[:limit], len(hits) > limit
