"""The reads answered in front of the framework (``query_api.fast_lane``) answer exactly what
the routes answer, and hand everything that is not plain to them; first pages are shared for
``page_cache_ms`` only, and never with a read that waits for its own write."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

from litestar.testing import AsyncTestClient
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from kernel.auth import mint_token
from kernel.settings import Settings
from projectors import redis_keys
from projectors.progress import ProgressBoard
from projectors.redis_scores import RedisScoresProjection
from query_api.fast_lane import SCORE_ROUTE
from schemas.envelope import Envelope
from schemas.events import CommentPosted, Event, VoteCast
from tally.bootstrap import query_app
from tests.pipeline import answered, isolated


class _Log:
    """Events for one commentable, with positions of their own."""

    def __init__(self) -> None:
        self.position = 0

    def envelope(self, event: Event) -> Envelope:
        self.position += 1
        return Envelope(
            event_id=uuid.uuid4(),
            stream_id=f"s-{self.position}",
            stream_version=1,
            position=self.position,
            occurred_at=datetime.now(UTC),
            event=event,
        )


def _vote(comment_id: uuid.UUID, user: str, value: int) -> VoteCast:
    return VoteCast(
        comment_id=comment_id, commentable_id="lane", user_id=user, value=value, previous=0
    )


def _served(settings: Settings) -> float:
    return (
        REGISTRY.get_sample_value(
            "tally_http_request_duration_seconds_count",
            {"service": "query_api", "method": "GET", "route": SCORE_ROUTE, "status": "200"},
        )
        or 0.0
    )


async def _projected(settings: Settings, redis: Redis) -> tuple[RedisScoresProjection, _Log, Any]:
    log = _Log()
    comment_id = uuid.uuid4()
    scores = RedisScoresProjection(redis, settings.redis_generation)
    await scores.setup()
    await scores.mark_intact()
    posted = CommentPosted(
        comment_id=comment_id, commentable_id="lane", author_id="alice", content="fast"
    )
    await scores.apply([log.envelope(posted), log.envelope(_vote(comment_id, "bob", 1))])
    return scores, log, comment_id


async def test_a_plain_score_read_answers_what_the_route_answers(
    settings: Settings, redis: Redis
) -> None:
    config = isolated(settings)
    _, log, comment_id = await _projected(config, redis)
    await answered(config, redis, log.position)
    async with AsyncTestClient(query_app(config)) as client:
        before = _served(config)
        fast = await client.get(
            f"/api/comments/{comment_id}/score", headers={"X-Request-ID": "r-1"}
        )
        routed = await client.get(
            f"/api/comments/{comment_id}/score", params={"min_position": log.position}
        )
        assert _served(config) == before + 2  # each counted once, by the lane or the route
        for reply in (fast, routed):
            assert reply.status_code == 200, reply.text
            assert reply.json() == {"comment_id": str(comment_id), "up": 1, "down": 0, "score": 1}
            assert reply.headers["content-type"] == "application/json"
            assert reply.headers["x-tally-position"] == str(log.position)
        assert fast.content == routed.content
        assert fast.headers["x-request-id"] == "r-1"
        assert routed.headers["x-request-id"] != "r-1"

        # Upper-case and brace-free ids are the same comment, as for the route.
        upper = await client.get(f"/api/comments/{str(comment_id).upper()}/score")
        assert upper.json()["comment_id"] == str(comment_id)

        # Not the lane's to answer: problems come from the route, with their types.
        unknown = await client.get(f"/api/comments/{uuid.uuid4()}/score")
        assert unknown.status_code == 404
        assert unknown.headers["content-type"].startswith("application/problem+json")
        bad = await client.get("/api/comments/not-a-uuid/score")
        assert bad.status_code in (400, 404)
        assert bad.headers["content-type"].startswith("application/problem+json")
        cors = await client.get(
            f"/api/comments/{comment_id}/score", headers={"Origin": "https://evil.example"}
        )
        assert cors.status_code == 200 and "access-control-allow-origin" not in cors.headers
        assert _served(config) == before + 4

        # Redis without its intact marker is lost: the route falls back (no comment index
        # here, so a 503 or 404 problem), never a number from a keyspace being rebuilt.
        await redis.delete(redis_keys.intact_key(config.redis_generation))
        await asyncio.sleep(1.1)  # the reader's cached check expires
        lost = await client.get(f"/api/comments/{comment_id}/score")
        assert lost.status_code in (404, 503)
        assert lost.headers["content-type"].startswith("application/problem+json")


async def test_anonymous_first_pages_are_shared_briefly_and_never_with_a_waiting_read(
    settings: Settings, redis: Redis
) -> None:
    config = isolated(settings, page_cache_ms=600, read_wait_ms=200)
    scores, log, comment_id = await _projected(config, redis)
    page = "/api/commentables/lane/comments"

    def up(reply: Any) -> int:
        assert reply.status_code == 200, reply.text
        return int(reply.json()["comments"][0]["up"])

    async with AsyncTestClient(query_app(config)) as client:
        first = await client.get(page, params={"sort": "top", "limit": 10})
        assert up(first) == 1
        await scores.apply([log.envelope(_vote(comment_id, "carol", 1))])
        await ProgressBoard(redis, config.kafka_group_prefix).publish("redis", log.position)
        kept = await client.get(page, params={"sort": "top", "limit": 10})
        assert up(kept) == 1 and kept.content == first.content  # the shared copy
        assert kept.headers["etag"] == first.headers["etag"]
        assert kept.headers["x-request-id"] != first.headers["x-request-id"]
        # Another page, a waiting read or a viewer gets its own answer at once.
        assert up(await client.get(page, params={"sort": "new", "limit": 10})) == 2
        waiting = await client.get(
            page, params={"sort": "top", "limit": 10, "min_position": log.position}
        )
        assert up(waiting) == 2
        token = mint_token("dave", config.jwt_secret, 600)
        viewer = await client.get(
            page,
            params={"sort": "top", "limit": 10},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert up(viewer) == 2 and viewer.json()["comments"][0]["my_vote"] == 0
        await asyncio.sleep(0.7)
        assert up(await client.get(page, params={"sort": "top", "limit": 10})) == 2

        # Errors are never kept: a bad parameter stays a 400 and a good one still answers.
        bad = await client.get(page, params={"sort": "worst"})
        assert bad.status_code == 400
        assert (await client.get(page, params={"sort": "worst"})).status_code == 400


async def test_with_the_copy_off_every_page_is_built_anew(settings: Settings, redis: Redis) -> None:
    config = isolated(settings, page_cache_ms=0, read_wait_ms=200)
    scores, log, comment_id = await _projected(config, redis)
    async with AsyncTestClient(query_app(config)) as client:
        page = "/api/commentables/lane/comments"
        first = await client.get(page, params={"sort": "top"})
        assert first.json()["comments"][0]["up"] == 1
        await scores.apply([log.envelope(_vote(comment_id, "carol", 1))])
        again = await client.get(page, params={"sort": "top"})
        assert again.json()["comments"][0]["up"] == 2
