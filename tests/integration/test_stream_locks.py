"""Concurrent batches on shared streams serialize on the unit of work's stream locks.

Several connections run ``run_batch`` at once on the same comments and vote streams, as the
group committers of several API processes do; a delete races the votes. Whatever the
interleaving: no batch fails, every vote stream's versions are 1..n with each event's
``previous`` the value before it, the ``votes`` rows equal the fold of their streams, and no
vote lands after its comment's delete.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from command_api.deciders.comment import DeleteComment, PostComment
from command_api.deciders.errors import DomainError
from command_api.deciders.vote import CastVote, RetractVote
from command_api.unit_of_work import run_batch
from command_api.work import Accepted, WorkItem
from event_store.port import stream_of_vote
from kernel.settings import Settings

WRITERS = 6
BATCHES = 12
USERS = 5


async def _run(conn: psycopg.AsyncConnection[Any], commands: list[Any]) -> list[Any]:
    items = [WorkItem(command=c, user_id=getattr(c, "user_id", "author")) for c in commands]
    return await run_batch(conn, items, 3600)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_racing_batches_keep_every_stream_consistent(
    clean_store: AsyncConnectionPool[Any], settings: Settings, seed: int
) -> None:
    rng = random.Random(seed)
    comments = [uuid4() for _ in range(3)]
    doomed = comments[0]
    async with await psycopg.AsyncConnection.connect(settings.pg_dsn, autocommit=True) as conn:
        posted = await _run(
            conn,
            [
                PostComment(comment_id=c, commentable_id="locks", author_id="author", content="x")
                for c in comments
            ],
        )
    assert all(isinstance(o, Accepted) for o in posted)

    async def writer(n: int) -> list[Any]:
        outcomes = []
        async with await psycopg.AsyncConnection.connect(settings.pg_dsn, autocommit=True) as c:
            for b in range(BATCHES):
                batch: list[Any] = [
                    CastVote(
                        comment_id=rng.choice(comments),
                        user_id=f"u{rng.randrange(USERS)}",
                        value=rng.choice((-1, 0, 1)),
                    )
                    if rng.random() < 0.85
                    else RetractVote(
                        comment_id=rng.choice(comments), user_id=f"u{rng.randrange(USERS)}"
                    )
                    for _ in range(rng.randrange(1, 8))
                ]
                if n == 0 and b == BATCHES // 2:
                    batch.append(DeleteComment(comment_id=doomed, user_id="author"))
                outcomes += await _run(c, batch)
                await asyncio.sleep(rng.random() / 500)
        return outcomes

    results = await asyncio.gather(*(writer(n) for n in range(WRITERS)))
    for outcome in (o for outcomes in results for o in outcomes):
        assert isinstance(outcome, Accepted | DomainError), outcome

    async with await psycopg.AsyncConnection.connect(settings.pg_dsn, autocommit=True) as conn:
        events = await (
            await conn.execute(
                "SELECT position, stream_id, stream_version, type, data FROM events"
                " ORDER BY position"
            )
        ).fetchall()
        rows = await (
            await conn.execute("SELECT comment_id, user_id, value, version FROM votes")
        ).fetchall()

    deleted_at = next(p for p, _, _, t, d in events if t == "CommentDeleted")
    folded: dict[tuple[UUID, str], tuple[int, int]] = {}
    for position, stream, version, kind, data in events:
        if not kind.startswith("Vote"):
            continue
        key = (UUID(data["comment_id"]), data["user_id"])
        value, last_version = folded.get(key, (0, 0))
        assert stream == stream_of_vote(*key)
        assert version == last_version + 1, (stream, version, last_version)
        assert data["previous"] == value
        folded[key] = (data["value"], version)
        if key[0] == doomed:
            assert position < deleted_at, "a vote landed after its comment was deleted"
    assert {(r[0], r[1]): (r[2], r[3]) for r in rows} == folded
    assert folded, "no vote was accepted"
