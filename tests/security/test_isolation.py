"""One hostile client never hurts another: requests coalesced into one Redis call or one
transaction are answered as if each had come alone."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from kernel.auth import mint_token
from kernel.settings import Settings, as_environment
from tally.processes import serve
from tally.processes import stop as stop_process

PORT = 28520
HOSTILE_SUBJECTS = ["x\ud800", "nul\x00inside", "bell\x07", "\u202eevil", "x" * 129]


@pytest.fixture(params=["limiter-on", "limiter-off"])
def command_api(
    request: pytest.FixtureRequest, config: Settings, clean_store: Any
) -> Iterator[str]:
    """A two-worker command API process, as `make run` starts it (rate limiter on, then off)."""
    limits = {"TALLY_VOTE_RATE_LIMIT": "0" if request.param == "limiter-off" else "100000"}
    proc = serve("command-api", PORT, as_environment(config) | limits, workers=2)
    try:
        yield f"http://127.0.0.1:{PORT}"
    finally:
        stop_process(proc)


async def test_300_honest_votes_are_answered_while_hostile_subjects_vote_on_the_same_comment(
    command_api: str, config: Settings, clean_store: AsyncConnectionPool[Any]
) -> None:
    secret = config.jwt_secret
    async with httpx.AsyncClient(
        base_url=command_api, timeout=30, limits=httpx.Limits(max_connections=400)
    ) as client:
        posted = await client.post(
            "/api/comments",
            json={"commentable_id": f"iso-{uuid.uuid4().hex[:6]}", "content": "vote here"},
            headers={"Authorization": f"Bearer {mint_token('author', secret, 300)}"},
        )
        assert posted.status_code == 201, posted.text
        path = f"/api/comments/{posted.json()['id']}/vote"

        async def vote(user: str) -> int:
            token = mint_token(user, secret, 300)
            reply = await client.put(
                path, json={"value": 1}, headers={"Authorization": f"Bearer {token}"}
            )
            return reply.status_code

        honest = [vote(f"honest-{n}") for n in range(300)]
        hostile = [vote(HOSTILE_SUBJECTS[n % len(HOSTILE_SUBJECTS)]) for n in range(100)]
        statuses = await asyncio.gather(*honest, *hostile)
    assert Counter(statuses[:300]) == {200: 300}
    assert Counter(statuses[300:]) == {401: 100}
    async with clean_store.connection() as conn:
        row = await (await conn.execute("SELECT count(*) FROM votes")).fetchone()
    assert row == (300,)
