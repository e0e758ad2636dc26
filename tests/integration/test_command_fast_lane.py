"""The command API answers a vote the same whether its fast lane or its route takes it: the
same statuses, headers, bodies, rows and metrics, on the real PostgreSQL and Redis."""

from __future__ import annotations

import re
from typing import Any
from uuid import uuid4

import msgspec
from httpx import Response
from litestar.testing import AsyncTestClient
from prometheus_client import REGISTRY

from command_api.fast_lane import VOTE_ROUTE
from kernel.auth import mint_token
from kernel.settings import Settings
from tally.bootstrap import command_app

_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _served(status: int) -> float:
    labels = {"service": "command_api", "method": "PUT", "route": VOTE_ROUTE, "status": str(status)}
    return REGISTRY.get_sample_value("tally_http_request_duration_seconds_count", labels) or 0.0


def _shape(reply: Response) -> tuple[Any, ...]:
    """What a client sees, with the ids and positions that differ between runs taken out."""
    body = _ID.sub("<id>", reply.text)
    body = re.sub(r'"position":\d+', '"position":<n>', body)
    headers = {
        k: v for k, v in reply.headers.items() if k not in {"x-request-id", "content-length"}
    }
    return reply.status_code, headers, body


async def _scenario(client: AsyncTestClient[Any], settings: Settings, run: str) -> list[Any]:
    def auth(user: str, **extra: str) -> dict[str, str]:
        token = mint_token(f"{run}-{user}", settings.jwt_secret, 300)
        return {"Authorization": f"Bearer {token}", **extra}

    posted = await client.post(
        "/api/comments", json={"commentable_id": f"lane-{run}", "content": "c"}, headers=auth("a")
    )
    url = f"/api/comments/{posted.json()['id']}/vote"
    keyed = auth("bob", **{"Idempotency-Key": "k-1", "X-Request-ID": f"{run}-1"})
    replies = [
        await client.put(url, json={"value": 1}, headers=keyed),
        await client.put(url, json={"value": 1}, headers=keyed),  # replayed
        await client.put(url, json={"value": -1}, headers=keyed),  # the key with another body
        await client.put(url, json={"value": -1}, headers=auth("bob")),
        await client.put(url, json={"value": 0}, headers=auth("bob")),
        await client.put(f"/api/comments/{uuid4()}/vote", json={"value": 1}, headers=auth("bob")),
        await client.put(url, json={"value": "up"}, headers=auth("carol")),  # to the route
        await client.put(url, json={"value": "1"}, headers=auth("dan")),  # a string, refused
        await client.put(url, json={"value": 1}, headers={"Authorization": "Bearer x"}),
        await client.put(url, json={"value": 1}, headers=auth("bob")),  # over the limit
        await client.put(url, json={"value": 1}, headers=auth("bob")),
    ]
    assert replies[1].headers["idempotent-replayed"] == "true"
    assert replies[0].headers["x-request-id"] == f"{run}-1"
    return [_shape(reply) for reply in replies]


async def test_the_lane_and_the_route_answer_votes_alike(
    settings: Settings, clean_store: Any, redis: Any
) -> None:
    # The per-address tier sits in front of both and refills with time: off, so that what
    # is compared is the lane and the route alone.
    config = msgspec.structs.replace(
        settings,
        vote_rate_limit=5,
        vote_rate_window_seconds=60,
        rate_limit_timeout_ms=5000,
        write_limit_per_address=0,
    )
    seen: dict[bool, tuple[list[Any], dict[int, float]]] = {}
    for lane in (False, True):
        before = {status: _served(status) for status in (200, 401, 404, 422, 429)}
        app = command_app(msgspec.structs.replace(config, command_fast_lane=lane))
        async with AsyncTestClient(app) as client:
            shapes = await _scenario(client, config, f"{lane}-{uuid4().hex[:6]}")
        seen[lane] = shapes, {s: _served(s) - n for s, n in before.items()}
    route, lane_shapes = seen[False][0], seen[True][0]
    assert [s[0] for s in route] == [200, 200, 422, 200, 200, 404, 422, 422, 401, 429, 429]
    assert lane_shapes == route
    assert seen[True][1] == seen[False][1] == {200: 4, 401: 1, 404: 1, 422: 3, 429: 2}
    async with clean_store.connection() as conn:
        rows = await (
            await conn.execute("SELECT type, count(*) FROM events GROUP BY type ORDER BY type")
        ).fetchall()
    # Each run: one comment; bob's +1, -1 (changed) and 0 (retracted); nothing of dan's.
    assert dict(rows) == {"CommentPosted": 2, "VoteCast": 2, "VoteChanged": 2, "VoteRetracted": 2}
