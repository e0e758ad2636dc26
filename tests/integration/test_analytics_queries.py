"""Every query in docs/analytics.md runs against a known history and answers correctly."""

from __future__ import annotations

import json
import re
import statistics
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import AsyncElasticsearch

from kernel.settings import Settings
from projectors.es_votes import EsVotesProjection
from schemas.envelope import Envelope
from schemas.events import VoteCast, VoteChanged, VoteRetracted
from tests.histories import build_history

DOC = Path(__file__).resolve().parents[2] / "docs" / "analytics.md"


def doc_queries() -> dict[int, str]:
    text = DOC.read_text()
    found = re.findall(r"### (\d)\. .*?```json\n(.*?)```", text, flags=re.S)
    return {int(n): body for n, body in found}


@pytest.fixture
async def votes_index(
    settings: Settings,
) -> AsyncIterator[tuple[AsyncElasticsearch, str, list[Envelope]]]:
    es = AsyncElasticsearch(settings.es_url, request_timeout=30)
    alias = f"test-analytics-{uuid.uuid4().hex[:8]}"
    projection = EsVotesProjection(es, alias=alias)
    await projection.setup()
    actions = [(0, c, 0, 0) for c in range(3)] + [
        (1, (n * 7) % 3, n % 4, (-1, 1, 0, 1, -1)[n % 5]) for n in range(60)
    ]
    history = build_history(actions, ["post-a", "post-b"])
    await projection.apply(history)
    await es.indices.refresh(index=f"{alias}-v1")
    try:
        yield (
            es,
            alias,
            [e for e in history if isinstance(e.event, VoteCast | VoteChanged | VoteRetracted)],
        )
    finally:
        await es.indices.delete(index=f"{alias}-v1")
        await es.close()


async def run(es: AsyncElasticsearch, alias: str, number: int, **values: str) -> dict[str, Any]:
    body = doc_queries()[number]
    for name, value in values.items():
        body = body.replace("{{" + name + "}}", value)
    assert "{{" not in body, body
    return dict(await es.search(index=alias, body=json.loads(body)))


def buckets(result: dict[str, Any], name: str) -> dict[Any, int]:
    return {b["key"]: b["doc_count"] for b in result["aggregations"][name]["buckets"]}


def test_the_doc_has_eight_queries() -> None:
    assert sorted(doc_queries()) == [1, 2, 3, 4, 5, 6, 7, 8]


async def test_votes_per_hour(votes_index: Any) -> None:
    es, alias, votes = votes_index
    result = await run(es, alias, 1, commentable_id="post-a")
    mine = [v for v in votes if v.event.commentable_id == "post-a"]
    per_hour = Counter(v.occurred_at.replace(minute=0, second=0) for v in mine)
    got = {
        b["key_as_string"][:13]: b["doc_count"]
        for b in result["aggregations"]["per_hour"]["buckets"]
    }
    assert {k: c for k, c in got.items() if c} == {
        h.isoformat()[:13]: c for h, c in per_hour.items()
    }


async def test_most_contested_comments_of_a_day(votes_index: Any) -> None:
    es, alias, votes = votes_index
    day = votes[0].occurred_at.date().isoformat()
    result = await run(es, alias, 2, day=day)
    todays = [v for v in votes if v.occurred_at.date().isoformat() == day]
    assert buckets(result, "comments") == Counter(str(v.event.comment_id) for v in todays)


async def test_a_users_voting_pattern(votes_index: Any) -> None:
    es, alias, votes = votes_index
    result = await run(es, alias, 3, user_id="bob")
    bobs = [v for v in votes if v.event.user_id == "bob"]
    assert buckets(result, "values") == Counter(v.event.value for v in bobs)
    assert buckets(result, "where") == Counter(v.event.commentable_id for v in bobs)


async def test_where_people_change_their_minds(votes_index: Any) -> None:
    es, alias, votes = votes_index
    result = await run(es, alias, 4)
    changed = [v for v in votes if isinstance(v.event, VoteChanged)]
    assert changed and buckets(result, "commentables") == Counter(
        v.event.commentable_id for v in changed
    )


async def test_net_score_movement_per_day(votes_index: Any) -> None:
    es, alias, votes = votes_index
    comment_id = str(votes[0].event.comment_id)
    result = await run(es, alias, 5, comment_id=comment_id)
    net = sum(b["net"]["value"] for b in result["aggregations"]["per_day"]["buckets"])
    assert net == sum(v.event.delta for v in votes if str(v.event.comment_id) == comment_id)


async def test_votes_received_per_author(votes_index: Any) -> None:
    es, alias, votes = votes_index
    result = await run(es, alias, 6, commentable_id="post-a")
    mine = [v for v in votes if v.event.commentable_id == "post-a"]
    assert all(v.event.comment_author_id for v in mine)
    assert buckets(result, "authors") == Counter(v.event.comment_author_id for v in mine)
    net = {b["key"]: b["net"]["value"] for b in result["aggregations"]["authors"]["buckets"]}
    expected: Counter[str] = Counter()
    for v in mine:
        expected[v.event.comment_author_id] += v.event.delta
    assert net == dict(expected)


async def test_how_fast_a_commentable_gathers_its_votes(votes_index: Any) -> None:
    es, alias, votes = votes_index
    result = await run(es, alias, 7, commentable_id="post-a")
    mine = sorted(
        v.occurred_at.timestamp() * 1000 for v in votes if v.event.commentable_id == "post-a"
    )
    arrived = result["aggregations"]["arrived_by"]["values"]
    p50, p90, p99 = (arrived[k] for k in ("50.0", "90.0", "99.0"))
    assert mine[0] <= p50 <= p90 <= p99 <= mine[-1]
    # Percentiles are estimates (t-digest): the share of votes in by p50 is near a half.
    assert 0.35 <= sum(t <= p50 for t in mine) / len(mine) <= 0.65
    assert sum(t <= p90 for t in mine) / len(mine) >= 0.8
    deltas = [v.event.delta for v in votes if v.event.commentable_id == "post-a"]
    sides = result["aggregations"]["sides"]
    assert (sides["count"], sides["sum"], sides["min"], sides["max"]) == (
        len(deltas),
        sum(deltas),
        min(deltas),
        max(deltas),
    )
    assert sides["std_deviation"] == pytest.approx(statistics.pstdev(deltas))


async def test_every_commentable_day_pages_through_a_composite_aggregation(
    votes_index: Any,
) -> None:
    es, alias, votes = votes_index
    template = json.loads(doc_queries()[8])
    template["aggs"]["daily"]["composite"]["size"] = 1  # many pages, even for a small history
    seen: dict[tuple[str, str], tuple[int, float]] = {}
    after = None
    for _ in range(100):
        if after is not None:
            template["aggs"]["daily"]["composite"]["after"] = after
        result = await es.search(index=alias, body=template)
        daily = result["aggregations"]["daily"]
        for bucket in daily["buckets"]:
            day = datetime.fromtimestamp(bucket["key"]["day"] / 1000, UTC).date().isoformat()
            seen[(bucket["key"]["commentable"], day)] = (
                bucket["doc_count"],
                bucket["net"]["value"],
            )
        after = daily.get("after_key")
        if after is None:
            break
    counts: Counter[tuple[str, str]] = Counter()
    nets: Counter[tuple[str, str]] = Counter()
    for v in votes:
        key = (v.event.commentable_id, v.occurred_at.astimezone(UTC).date().isoformat())
        counts[key] += 1
        nets[key] += v.event.delta
    assert seen == {key: (counts[key], float(nets[key])) for key in counts}
