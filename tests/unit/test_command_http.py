"""The command API's HTTP layer on in-memory services: routes, auth, idempotency, errors.

The same app as in production (``create_app``), given an in-memory write side instead of
PostgreSQL and Redis; the integration tests run it on the real stores.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from command_api.app import create_app
from command_api.memory import InMemoryCommands
from command_api.rate_limit import RateLimited
from command_api.services import CommandServices
from kernel.auth import TokenVerifier, mint_token
from kernel.limits import Quota
from schemas.events import CommentPosted, VoteCast

SECRET = "a-unit-test-secret-that-is-long-enough"


class CountingLimiter:
    """Lets ``limit`` requests through per user and action, then refuses."""

    def __init__(self, limit: int = 1000) -> None:
        self.limit = limit
        self.seen: dict[tuple[str, str], int] = {}

    async def check(self, user_id: str, action: str) -> Quota:
        used = self.seen[(user_id, action)] = self.seen.get((user_id, action), 0) + 1
        quota = Quota(self.limit, max(0, self.limit - used), 60)
        if used > self.limit:
            raise RateLimited(action, msgspec.structs.replace(quota, retry_after=7))
        return quota

    async def refund(self, user_id: str, action: str) -> None:
        self.seen[(user_id, action)] -= 1


@pytest.fixture
def commands() -> InMemoryCommands:
    return InMemoryCommands()


def client_on(commands: InMemoryCommands, limiter: CountingLimiter) -> AsyncTestClient[Any]:
    @contextlib.asynccontextmanager
    async def services() -> AsyncIterator[CommandServices]:
        yield CommandServices(
            submit=lambda item: commands._one(item),
            rate_limiter=limiter,
            verifier=TokenVerifier(SECRET),
        )

    return AsyncTestClient(create_app(services))


def auth(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(user, SECRET, 60)}"}


async def test_a_post_and_a_vote_become_events_with_their_positions(
    commands: InMemoryCommands,
) -> None:
    async with client_on(commands, CountingLimiter()) as client:
        posted = await client.post(
            "/api/comments", json={"commentable_id": "p", "content": "hi"}, headers=auth("a")
        )
        voted = await client.put(
            f"/api/comments/{posted.json()['id']}/vote", json={"value": 1}, headers=auth("b")
        )
    assert (posted.status_code, voted.status_code) == (201, 200)
    assert (posted.json()["position"], voted.json()["position"]) == (1, 2)
    log = [e async for batch in commands.store.read_all() for e in batch]
    assert [type(e.event) for e in log] == [CommentPosted, VoteCast]


async def test_an_idempotency_key_replays_and_refuses_another_body(
    commands: InMemoryCommands,
) -> None:
    headers = auth("a") | {"Idempotency-Key": "k1"}
    body = {"commentable_id": "p", "content": "once"}
    async with client_on(commands, CountingLimiter()) as client:
        first = await client.post("/api/comments", json=body, headers=headers)
        again = await client.post("/api/comments", json=body, headers=headers)
        other = await client.post(
            "/api/comments", json=body | {"content": "twice"}, headers=headers
        )
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    assert first.headers["ratelimit-remaining"] == again.headers["ratelimit-remaining"]
    assert other.status_code == 422
    assert other.headers["content-type"].startswith("application/problem+json")
    assert commands.store.last_position("comment-" + first.json()["id"]) == 1
    assert len([e async for batch in commands.store.read_all() for e in batch]) == 1


async def test_refusals_are_problems_and_write_nothing(commands: InMemoryCommands) -> None:
    async with client_on(commands, CountingLimiter(limit=1)) as client:
        no_token = await client.post("/api/comments", json={"commentable_id": "p", "content": "x"})
        unknown = await client.put(
            f"/api/comments/{uuid4()}/vote", json={"value": 1}, headers=auth("a")
        )
        limited = await client.delete(f"/api/comments/{uuid4()}/vote", headers=auth("a"))
    assert (no_token.status_code, no_token.json()["type"]) == (
        401,
        "urn:tally:problem:unauthenticated",
    )
    assert (unknown.status_code, unknown.json()["type"]) == (
        404,
        "urn:tally:problem:comment-not-found",
    )
    assert (limited.status_code, limited.headers["retry-after"]) == (429, "7")
    assert limited.headers["ratelimit-remaining"] == "0"
    assert [e async for batch in commands.store.read_all() for e in batch] == []


async def test_a_vote_value_of_the_wrong_json_type_is_refused_not_converted(
    commands: InMemoryCommands,
) -> None:
    limiter = CountingLimiter()
    async with client_on(commands, limiter) as client:
        posted = await client.post(
            "/api/comments", json={"commentable_id": "p", "content": "hi"}, headers=auth("a")
        )
        url = f"/api/comments/{posted.json()['id']}/vote"
        refused = [
            await client.put(url, json={"value": wrong}, headers=auth("b"))
            for wrong in ("1", "-1", 1.0, True, None, [1])
        ]
    for reply in refused:
        assert reply.status_code == 422, reply.text
        assert reply.headers["content-type"] == "application/problem+json"
        assert reply.json()["errors"][0]["key"] == "value"
    assert refused[0].json()["detail"] == "value: Expected `int`, got `str`"
    log = [e async for batch in commands.store.read_all() for e in batch]
    assert [type(e.event) for e in log] == [CommentPosted]  # no vote was written
    assert ("b", "vote") not in limiter.seen  # nor counted
