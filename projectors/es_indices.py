"""Elasticsearch index definitions: aliases over versioned indices, explicit mappings."""

from __future__ import annotations

from typing import Any

from elasticsearch import AsyncElasticsearch
from elasticsearch import BadRequestError as EsBadRequest

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
    """Create ``<alias>-v<version>`` behind ``alias`` unless the alias exists; return its name."""
    if await es.indices.exists_alias(name=alias):
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
