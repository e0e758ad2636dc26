"""Votes over real HTTP against a 2-worker command API on the real stack."""

from __future__ import annotations

import asyncio
import random
from typing import Any
from uuid import UUID

import httpx
from psycopg_pool import AsyncConnectionPool

from event_store.port import stream_of_vote
from kernel.auth import mint_token
from kernel.settings import Settings


def bearer(settings: Settings, user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(user, settings.jwt_secret, 300)}"}


async def test_64_concurrent_votes_of_one_user_leave_one_consistent_vote(
    command_api: str, settings: Settings, clean_store: AsyncConnectionPool[Any], redis: Any
) -> None:
    alice, bob = bearer(settings, "alice"), bearer(settings, "bob")
    async with httpx.AsyncClient(base_url=command_api, timeout=30) as client:
        posted = await client.post(
            "/api/comments", json={"commentable_id": "race", "content": "go"}, headers=alice
        )
        comment = posted.json()["id"]
        values = [random.choice([-1, 0, 1]) for _ in range(64)]
        replies = await asyncio.gather(
            *(
                client.put(f"/api/comments/{comment}/vote", json={"value": v}, headers=bob)
                for v in values
            )
        )
    assert [r.status_code for r in replies] == [200] * 64, [r.text for r in replies]
    async with clean_store.connection() as conn:
        events = await (
            await conn.execute(
                "SELECT stream_version, data->>'value', data->>'previous', position FROM events"
                " WHERE stream_id = %s ORDER BY stream_version",
                (stream_of_vote(UUID(comment), "bob"),),
            )
        ).fetchall()
        row = await (
            await conn.execute("SELECT value, version FROM votes WHERE user_id = 'bob'")
        ).fetchone()
    versions = [e[0] for e in events]
    assert versions == list(range(1, len(events) + 1))  # 1..n, no gap
    value = 0
    for _, new, previous, _ in events:  # every event starts where the one before ended
        assert int(previous) == value and int(new) != value
        value = int(new)
    assert row == (value, len(events))
    # The reply with the highest position tells the final state.
    last = max((r.json() for r in replies), key=lambda body: body["position"])
    assert last["value"] == value


async def test_a_user_can_post_vote_change_and_retract(
    command_api: str, settings: Settings, clean_store: AsyncConnectionPool[Any], redis: Any
) -> None:
    alice, bob = bearer(settings, "alice"), bearer(settings, "bob")
    async with httpx.AsyncClient(base_url=command_api, timeout=10) as client:
        comment = (
            await client.post(
                "/api/comments", json={"commentable_id": "e2e", "content": "hi"}, headers=alice
            )
        ).json()
        url = f"/api/comments/{comment['id']}/vote"
        cast = (await client.put(url, json={"value": 1}, headers=bob)).json()
        changed = (await client.put(url, json={"value": -1}, headers=bob)).json()
        retracted = (await client.delete(url, headers=bob)).json()
        request_id = (await client.get("/health", headers={"X-Request-ID": "req-42"})).headers
    assert comment["position"] < cast["position"] < changed["position"] < retracted["position"]
    assert [(r["previous"], r["value"]) for r in (cast, changed, retracted)] == [
        (0, 1),
        (1, -1),
        (-1, 0),
    ]
    assert request_id["x-request-id"] == "req-42"
