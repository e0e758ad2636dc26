"""One vote, one trace: the HTTP command, the append, the relay's publish, the projector's apply.

The real command API (in process), PostgreSQL, the broker and Redis; spans go to an in-memory
exporter through a tracer provider of this test's own.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from event_store.port import PendingEvent
from event_store.postgres import append_pending
from kernel import tracing
from kernel.auth import mint_token
from kernel.settings import Settings
from projectors.redis_scores import RedisScoresProjection
from schemas.events import VoteCast
from tally.bootstrap import command_app
from tests.pipeline import (
    consume,
    eventually,
    isolated,
    publish,
    redis_matches_store,
    runner_for,
    running,
)

CALLER_TRACE = uuid.uuid4().int
CALLER_SPAN = 0x00F067AA0BA902B7


@pytest.fixture
def exported(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """Spans of this test, as if ``TALLY_OTEL_EXPORTER`` were on in every process."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_tracer", provider.get_tracer("test"))
    yield exporter
    provider.shutdown()


async def vote_over_http(settings: Settings, headers: dict[str, str]) -> tuple[str, int]:
    """Post a comment and vote on it; return the comment id and the vote's position."""
    auth = {"Authorization": f"Bearer {mint_token('alice', settings.jwt_secret, 300)}"}
    async with AsyncTestClient(command_app(settings)) as client:
        posted = await client.post(
            "/api/comments", json={"commentable_id": "post-1", "content": "hi"}, headers=auth
        )
        assert posted.status_code == 201, posted.text
        comment_id = posted.json()["id"]
        voted = await client.put(
            f"/api/comments/{comment_id}/vote", json={"value": 1}, headers=auth | headers
        )
        assert voted.status_code == 200, voted.text
    return comment_id, int(voted.json()["position"])


async def stored_traceparent(pool: AsyncConnectionPool[Any], position: int) -> str | None:
    async with pool.connection() as conn:
        row = await (
            await conn.execute(
                "SELECT metadata->>'traceparent' FROM events WHERE position = %s", (position,)
            )
        ).fetchone()
    assert row is not None
    return row[0] if row[0] is None else str(row[0])


def one(spans: list[ReadableSpan], name: str, **attributes: Any) -> ReadableSpan:
    found = [
        s
        for s in spans
        if s.name == name and all((s.attributes or {}).get(k) == v for k, v in attributes.items())
    ]
    assert len(found) == 1, [(s.name, s.attributes) for s in spans]
    return found[0]


def parent_of(span: ReadableSpan) -> int:
    assert span.parent is not None, span.name
    return span.parent.span_id


async def test_one_vote_is_one_trace_from_the_http_command_to_the_projection(
    settings: Settings,
    apool: AsyncConnectionPool[Any],
    redis: Redis,
    exported: InMemorySpanExporter,
) -> None:
    config = isolated(settings, trusted_proxies="*")  # the caller is a proxy of ours
    caller = {"traceparent": f"00-{CALLER_TRACE:032x}-{CALLER_SPAN:016x}-01"}
    _, position = await vote_over_http(config, caller)

    assert await publish(config, apool) == 2
    async with running(
        runner_for(RedisScoresProjection(redis, config.redis_generation), config, apool)
    ):
        await eventually(lambda: redis_matches_store(redis, config.redis_generation, apool))
        await eventually(
            lambda: _has(exported, "apply redis", position), seconds=10
        )  # its span ends once the batch is applied

    spans = list(exported.get_finished_spans())
    http = one(spans, "PUT /api/comments/{comment_id:uuid}/vote")
    append = one(spans, "append CastVote")
    published = one(spans, f"publish {config.kafka_topic}", **{"tally.position": position})
    apply = one(spans, "apply redis", **{"tally.position": position})

    # One trace, the caller's, with each step a child of the one before.
    assert {s.context.trace_id for s in (http, append, published, apply)} == {CALLER_TRACE}
    assert parent_of(http) == CALLER_SPAN
    assert parent_of(append) == http.context.span_id
    assert parent_of(published) == append.context.span_id
    assert parent_of(apply) == published.context.span_id
    assert [s.kind for s in (http, append, published, apply)] == [
        SpanKind.SERVER,
        SpanKind.INTERNAL,
        SpanKind.PRODUCER,
        SpanKind.CONSUMER,
    ]
    assert http.attributes is not None and http.attributes["http.response.status_code"] == 200
    # The append's context is what the event store kept for the relay.
    assert await stored_traceparent(apool, position) == (
        f"00-{CALLER_TRACE:032x}-{append.context.span_id:016x}-01"
    )
    # The comment was posted in a trace of its own, started by the command API.
    post = one(spans, "POST /api/comments")
    assert post.parent is None and post.context.trace_id != CALLER_TRACE


async def _has(exported: InMemorySpanExporter, name: str, position: int) -> bool:
    return any(
        s.name == name and (s.attributes or {}).get("tally.position") == position
        for s in exported.get_finished_spans()
    )


async def test_a_relay_with_tracing_off_passes_the_stored_context_on(
    settings: Settings, apool: AsyncConnectionPool[Any]
) -> None:
    config = isolated(settings)
    stored = f"00-{CALLER_TRACE:032x}-{CALLER_SPAN:016x}-01"
    vote = VoteCast(comment_id=uuid.uuid4(), commentable_id="p", user_id="u", value=1, previous=0)
    async with apool.connection() as conn, conn.transaction(), conn.cursor() as cur:
        await append_pending(
            cur, [PendingEvent(stream_id="s", stream_version=1, event=vote, traceparent=stored)]
        )
    assert tracing.tracer() is None
    assert await publish(config, apool) == 1
    [message] = await consume(config, 1)
    assert dict(message.headers)["traceparent"] == stored.encode()


async def test_with_tracing_off_no_trace_context_is_stored(
    settings: Settings, apool: AsyncConnectionPool[Any]
) -> None:
    # TALLY_OTEL_EXPORTER=none, the default: no tracer, no spans, no traceparent stored.
    _, position = await vote_over_http(isolated(settings), {})
    assert await stored_traceparent(apool, position) is None


async def test_an_untrusted_callers_trace_context_neither_forces_sampling_nor_names_the_trace(
    settings: Settings, apool: AsyncConnectionPool[Any], exported: InMemorySpanExporter
) -> None:
    config = isolated(settings, trusted_proxies="10.0.0.0/8")  # the test client is no proxy
    forced = f"00-{CALLER_TRACE:032x}-{CALLER_SPAN:016x}-01"  # "sampled", with its own trace id
    await vote_over_http(config, {"traceparent": forced})
    http = one(list(exported.get_finished_spans()), "PUT /api/comments/{comment_id:uuid}/vote")
    assert http.context.trace_id != CALLER_TRACE and http.parent is None  # a trace of our own
    assert (http.attributes or {})["tally.client_traceparent"] == forced
