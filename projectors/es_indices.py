"""Elasticsearch index definitions: aliases over versioned indices, explicit mappings and
analysis settings, and the bulk writes both projections share."""

from __future__ import annotations

import asyncio
import time
from typing import Any, NamedTuple

from elasticsearch import AsyncElasticsearch
from elasticsearch import BadRequestError as EsBadRequest
from prometheus_client import Counter

from projectors.base import StoreBusy
from projectors.store_errors import es_item_is_transient

RETRIED_ITEMS = Counter(
    "tally_projection_bulk_items_retried_total",
    "Bulk items the search engine refused for now (429, 5xx, blocked) and that were sent again",
)

COMMENTS_ALIAS = "tally-comments"
VOTES_ALIAS = "tally-votes"

# Comment text is Russian and English: one analyzer stems both (each stemmer leaves the other
# alphabet alone) and folds yo into ye (U+0451 into U+0435), as Russian readers type it.
TEXT_ANALYSIS: dict[str, Any] = {
    "char_filter": {
        "yo": {"type": "mapping", "mappings": ["\u0451 => \u0435", "\u0401 => \u0415"]}
    },
    "filter": {
        "possessive_en": {"type": "stemmer", "language": "possessive_english"},
        "stem_ru": {"type": "stemmer", "language": "russian"},
        "stem_en": {"type": "stemmer", "language": "english"},
    },
    "analyzer": {
        "tally_text": {
            "type": "custom",
            "char_filter": ["yo"],
            "tokenizer": "standard",
            "filter": ["lowercase", "possessive_en", "stem_ru", "stem_en"],
        }
    },
}

COMMENTS_MAPPING: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "comment_id": {"type": "keyword"},
        "commentable_id": {"type": "keyword"},
        "author_id": {"type": "keyword"},
        "parent_id": {"type": "keyword"},
        "content": {"type": "text", "analyzer": "tally_text"},
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


class IndexSpec(NamedTuple):
    """What a new index of a read model is created with."""

    mappings: dict[str, Any]
    settings: dict[str, Any]


COMMENTS_INDEX = IndexSpec(COMMENTS_MAPPING, {"analysis": TEXT_ANALYSIS})
VOTES_INDEX = IndexSpec(VOTES_MAPPING, {})


async def ensure_index(es: AsyncElasticsearch, alias: str, version: int, spec: IndexSpec) -> str:
    """Create ``<alias>-v<version>`` behind ``alias`` unless the alias exists; return its name.

    An existing index gets the fields it lacks (adding fields is always allowed; changing how
    one is analyzed is not: that takes a new index, ``tally replay``).
    """
    if await es.indices.exists_alias(name=alias):
        current = await es.indices.get_mapping(index=alias)
        have = {
            field
            for body in current.body.values()
            for field in (body.get("mappings") or {}).get("properties", {})
        }
        missing = {k: v for k, v in spec.mappings["properties"].items() if k not in have}
        if missing:
            await es.indices.put_mapping(index=alias, properties=missing)
        return alias
    index = f"{alias}-v{version}"
    try:
        await es.indices.create(
            index=index, mappings=spec.mappings, settings=spec.settings, aliases={alias: {}}
        )
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


def _sort_failures(reply: Any) -> tuple[list[int], list[tuple[int, dict[str, Any]]]]:
    """The items of a bulk reply to send again (refused for now), and those refused for good."""
    if not reply["errors"]:
        return [], []
    again: list[int] = []
    refused: list[tuple[int, dict[str, Any]]] = []
    for n, item in enumerate(reply["items"]):
        result = next(iter(item.values()))
        status = int(result.get("status", 200))
        if status < 300 or status == 409:
            continue
        if es_item_is_transient(result):
            again.append(n)
        else:
            refused.append((n, result))
    return again, refused


async def bulk_write(
    es: AsyncElasticsearch,
    operations: list[tuple[dict[str, Any], dict[str, Any]]],
    patience: float = 5.0,
) -> list[tuple[int, dict[str, Any]]]:
    """Send (action, document) pairs in one bulk request; items refused for now (429, 5xx, a
    blocked index: the engine is under pressure) are sent again alone, with backoff, for up to
    ``patience`` seconds, then ``StoreBusy`` (the caller retries the batch later). Returns the
    (index in ``operations``, result) of items refused for good.
    """
    pending = list(range(len(operations)))
    refused: list[tuple[int, dict[str, Any]]] = []
    delay, deadline = 0.05, time.monotonic() + patience
    while pending:
        body = [part for n in pending for part in operations[n]]
        reply = await es.bulk(operations=body)
        again, lost = _sort_failures(reply)
        refused += [(pending[n], result) for n, result in lost]
        if again and time.monotonic() + delay > deadline:
            result = next(iter(reply["items"][again[0]].values()))
            raise StoreBusy(f"elasticsearch refused a write for now: {result.get('error')}")
        pending = [pending[n] for n in again]
        if pending:
            RETRIED_ITEMS.inc(len(pending))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
    return sorted(refused)
