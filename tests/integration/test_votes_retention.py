"""Vote documents age out after TALLY_VOTES_RETENTION_DAYS, against the real Elasticsearch-API
server: old votes are not written, documents that aged out are deleted, and neither the
reconciler nor a rebuild brings them back."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from elasticsearch import AsyncElasticsearch

from kernel.settings import Settings
from projectors.es_votes import EsVotesProjection, vote_document
from projectors.es_votes_retention import VotesRetention, within
from projectors.judging import CommentHistory
from schemas.envelope import Envelope
from tests.histories import build_history

DAYS = 30


def aged(history: list[Envelope]) -> list[Envelope]:
    """Every other event 40 days old, the rest from today."""
    now = datetime.now(UTC)
    return [
        msgspec.structs.replace(e, occurred_at=now - timedelta(days=40 if n % 2 else 0))
        for n, e in enumerate(history)
    ]


@pytest.fixture
async def es(settings: Settings) -> AsyncIterator[tuple[AsyncElasticsearch, str]]:
    client = AsyncElasticsearch(settings.es_url, request_timeout=30)
    alias = f"test-retention-{uuid.uuid4().hex[:8]}"
    yield client, alias
    for index in await client.indices.get(index=f"{alias}-*"):
        await client.indices.delete(index=index)
    await client.close()


async def stored_ids(client: AsyncElasticsearch, alias: str) -> set[str]:
    await client.indices.refresh(index=alias)
    found = await client.search(index=alias, size=1000, query={"match_all": {}})
    return {hit["_id"] for hit in found["hits"]["hits"]}


def history() -> list[Envelope]:
    actions = [(0, c, 0, 0) for c in range(3)] + [
        (1, n % 3, n % 4, (-1, 1, 0, 1)[n % 4]) for n in range(40)
    ]
    return aged(build_history(actions, ["post-r"]))


async def test_votes_older_than_the_retention_are_not_written(es: Any) -> None:
    client, alias = es
    events = history()
    projection = EsVotesProjection(client, alias, retention_days=DAYS)
    await projection.setup()
    await projection.apply(events)
    recent = {str(e.event_id) for e in events if vote_document(e) and within(DAYS, e)}
    assert recent and await stored_ids(client, alias) == recent
    # The reconciler does not call an aged-out vote missing, nor write it back.
    histories: dict[str, list[Envelope]] = {}
    for e in events:
        histories.setdefault(str(e.event.comment_id), []).append(e)
    whole = {c: CommentHistory(h) for c, h in histories.items()}
    assert await projection.reconcile(whole, events[-1].position, repair=True) == []
    assert await stored_ids(client, alias) == recent


async def test_the_hourly_pass_deletes_what_aged_out_and_keeps_the_rest(es: Any) -> None:
    client, alias = es
    events = history()
    keep_all = EsVotesProjection(client, alias)  # written before a retention was set
    await keep_all.setup()
    await keep_all.apply(events)
    votes = {str(e.event_id): e for e in events if vote_document(e)}
    assert await stored_ids(client, alias) == set(votes)
    deleted = await VotesRetention(client, alias, DAYS).expire_once()
    left = await stored_ids(client, alias)
    assert left == {i for i, e in votes.items() if within(DAYS, e)}
    assert deleted == len(votes) - len(left) > 0
    assert await VotesRetention(client, alias, DAYS).expire_once() == 0
