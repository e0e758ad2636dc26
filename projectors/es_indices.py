"""Elasticsearch index definitions: aliases over versioned indices, explicit mappings."""

from __future__ import annotations

from typing import Any

from elasticsearch import AsyncElasticsearch
from elasticsearch import BadRequestError as EsBadRequest

from projectors.base import StoreBusy
from projectors.store_errors import es_item_is_transient

COMMENTS_ALIAS = "tally-comments"
VOTES_ALIAS = "tally-votes"

COMMENTS_MAPPING: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "comment_id": {"type": "keyword"},
        "commentable_id": {"type": "keyword"},
        "author_id": {"type": "keyword"},
        "parent_id": {"type": "keyword"},
        "content": {"type": "text"},
        "created_at": {"type": "date"},
        "edited_at": {"type": "date"},
        "deleted": {"type": "boolean"},
        "depth": {"type": "integer"},
        "up": {"type": "integer"},
        "down": {"type": "integer"},
        "score": {"type": "integer"},
        "position": {"type": "long"},
    },
}

VOTES_MAPPING: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "@timestamp": {"type": "date"},
        "event_id": {"type": "keyword"},
        "event_type": {"type": "keyword"},
        "comment_id": {"type": "keyword"},
        "commentable_id": {"type": "keyword"},
        "parent_id": {"type": "keyword"},
        "comment_author_id": {"type": "keyword"},
        "user_id": {"type": "keyword"},
        "value": {"type": "byte"},
        "previous": {"type": "byte"},
        "delta": {"type": "byte"},
        "position": {"type": "long"},
    },
}


async def ensure_index(
    es: AsyncElasticsearch, alias: str, version: int, mappings: dict[str, Any]
) -> str:
    """Create ``<alias>-v<version>`` behind ``alias`` unless the alias exists; return its name.

    An existing index gets the mapping's new fields (adding fields is always allowed).
    """
    if await es.indices.exists_alias(name=alias):
        await es.indices.put_mapping(index=alias, properties=mappings["properties"])
        return alias
    index = f"{alias}-v{version}"
    try:
        await es.indices.create(index=index, mappings=mappings, aliases={alias: {}})
    except EsBadRequest as exc:
        if "already_exists" not in str(exc) and "already exists" not in str(exc):
            raise
    return index


async def ensure_votes_template(es: AsyncElasticsearch) -> None:
    """An index template so every ``tally-votes-*`` index gets the analytics mapping."""
    await es.indices.put_index_template(
        name=VOTES_ALIAS,
        index_patterns=[f"{VOTES_ALIAS}-*"],
        template={"mappings": VOTES_MAPPING},
    )


async def mark_intact(es: AsyncElasticsearch, index: str) -> None:
    """Mark ``index`` (or the index behind an alias) as whole, in its mapping's ``_meta``."""
    await es.indices.put_mapping(index=index, meta={"tally_intact": True})


async def is_intact(es: AsyncElasticsearch, alias: str) -> bool:
    """Is ``alias`` an alias whose index carries the marker? (A deleted index loses both.)"""
    if not await es.indices.exists_alias(name=alias):
        return False
    found = await es.indices.get_mapping(index=alias)
    return any(
        (body.get("mappings") or {}).get("_meta", {}).get("tally_intact")
        for body in found.body.values()
    )


def refused_items(reply: Any) -> list[tuple[int, dict[str, Any]]]:
    """(index in the request, result) of every bulk item that failed, a version conflict aside.

    A conflict means a newer version is stored already: the write was not needed. A transient
    failure (back-pressure, a blocked index) raises ``StoreBusy``; the rest are returned.
    """
    if not reply["errors"]:
        return []
    refused = []
    for n, item in enumerate(reply["items"]):
        result = next(iter(item.values()))
        status = int(result.get("status", 200))
        if status < 300 or status == 409:
            continue
        if es_item_is_transient(result):
            raise StoreBusy(f"elasticsearch refused a write for now: {result.get('error')}")
        refused.append((n, result))
    return refused
