"""The command API against the real PostgreSQL and Redis of the test stack."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any
from uuid import uuid4

import jwt
import msgspec
import pytest
import structlog
from httpx import Response
from litestar.testing import AsyncTestClient
from prometheus_client import REGISTRY, generate_latest
from psycopg_pool import AsyncConnectionPool
from structlog.testing import LogCapture

from command_api import unit_of_work
from event_store.errors import CommitOutcomeUnknown
from kernel.auth import mint_token
from kernel.settings import Settings
from tally.bootstrap import command_app

ApiFactory = Callable[..., AbstractAsyncContextManager[AsyncTestClient[Any]]]


@pytest.fixture
def api(settings: Settings, clean_store: Any, redis: Any) -> ApiFactory:
    """Start the app with optional setting overrides: ``async with api(vote_rate_limit=3)``."""

    @asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[AsyncTestClient[Any]]:
        app = command_app(msgspec.structs.replace(settings, **overrides))
        async with AsyncTestClient(app) as client:
            yield client

    return start


def auth(settings: Settings, user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(user, settings.jwt_secret, 300)}"}


async def post_comment(client: AsyncTestClient[Any], headers: dict[str, str]) -> str:
    reply = await client.post(
        "/api/comments", json={"commentable_id": "post-1", "content": "first!"}, headers=headers
    )
    assert reply.status_code == 201, reply.text
    return str(reply.json()["id"])


async def count(pool: AsyncConnectionPool[Any], table: str) -> int:
    async with pool.connection() as conn:
        row = await (await conn.execute(f"SELECT count(*) FROM {table}")).fetchone()
        return int(row[0]) if row else 0


def assert_problem(reply: Response, status: int, code: str) -> None:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"].startswith("application/problem+json")
    body = reply.json()
    assert body["status"] == status and body["type"] == f"urn:tally:problem:{code}"
    assert body["detail"]


async def test_a_user_posts_votes_changes_and_retracts(
    api: ApiFactory, settings: Settings, clean_store: AsyncConnectionPool[Any]
) -> None:
    bob = auth(settings, "bob")
    async with api() as client:
        comment = await post_comment(client, auth(settings, "alice"))
        url = f"/api/comments/{comment}/vote"
        replies = [
            (await client.put(url, json={"value": v}, headers=bob)).json() for v in (1, 1, -1)
        ]
        retract = (await client.delete(url, headers=bob)).json()
    assert [(r["value"], r["previous"]) for r in replies] == [(1, 0), (1, 1), (-1, 1)]
    assert replies[1]["position"] == replies[0]["position"]  # same value: nothing appended
    assert replies[2]["position"] > replies[0]["position"]
    assert (retract["value"], retract["previous"]) == (0, -1)
    async with clean_store.connection() as conn:
        rows = await (
            await conn.execute("SELECT type, stream_version, position FROM events ORDER BY 3")
        ).fetchall()
        vote_row = await (await conn.execute("SELECT value, version FROM votes")).fetchone()
    assert [r[0] for r in rows] == ["CommentPosted", "VoteCast", "VoteChanged", "VoteRetracted"]
    assert [r[1] for r in rows[1:]] == [1, 2, 3]
    assert rows[-1][2] == retract["position"]
    assert vote_row == (0, 3)
    assert await count(clean_store, "outbox") == 4


async def test_only_the_author_edits_and_nobody_votes_after_a_delete(
    api: ApiFactory, settings: Settings
) -> None:
    alice, bob = auth(settings, "alice"), auth(settings, "bob")
    async with api() as client:
        comment = await post_comment(client, alice)
        url = f"/api/comments/{comment}"
        assert_problem(
            await client.patch(url, json={"content": "mine"}, headers=bob), 403, "not-the-author"
        )
        edited = await client.patch(url, json={"content": "edited"}, headers=alice)
        assert edited.status_code == 200 and edited.json()["id"] == comment
        assert (await client.delete(url, headers=alice)).status_code == 200
        assert_problem(
            await client.put(f"{url}/vote", json={"value": 1}, headers=bob), 409, "comment-deleted"
        )
        assert_problem(
            await client.patch(url, json={"content": "x"}, headers=alice), 409, "comment-deleted"
        )


async def test_a_reply_must_be_in_its_parents_commentable(
    api: ApiFactory, settings: Settings
) -> None:
    alice = auth(settings, "alice")
    async with api() as client:
        parent = await post_comment(client, alice)
        ok = await client.post(
            "/api/comments",
            json={"commentable_id": "post-1", "content": "re", "parent_id": parent},
            headers=alice,
        )
        assert ok.status_code == 201
        wrong = await client.post(
            "/api/comments",
            json={"commentable_id": "post-2", "content": "re", "parent_id": parent},
            headers=alice,
        )
        assert_problem(wrong, 404, "parent-not-found")


async def test_an_idempotency_key_replays_the_first_reply_without_a_second_write(
    api: ApiFactory, settings: Settings, clean_store: AsyncConnectionPool[Any]
) -> None:
    alice = auth(settings, "alice")
    async with api() as client:
        comment = await post_comment(client, alice)
        url = f"/api/comments/{comment}/vote"
        keyed = {**alice, "Idempotency-Key": "vote-1"}
        first = await client.put(url, json={"value": 1}, headers=keyed)
        # The vote changes in between; the replay still answers what the key did.
        await client.put(url, json={"value": -1}, headers=alice)
        again = await client.put(url, json={"value": 1}, headers=keyed)
        other_body = await client.put(url, json={"value": 0}, headers=keyed)
        other_user = await client.put(
            url, json={"value": 1}, headers={**auth(settings, "bob"), "Idempotency-Key": "vote-1"}
        )
    assert again.status_code == 200 and again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert_problem(other_body, 422, "idempotency-key-reused")
    assert other_user.status_code == 200 and "idempotent-replayed" not in other_user.headers
    assert await count(clean_store, "events") == 4  # post, cast, change, bob's cast


async def test_a_duplicate_in_flight_gets_409(
    api: ApiFactory, settings: Settings, clean_store: AsyncConnectionPool[Any]
) -> None:
    alice = auth(settings, "alice")
    async with api() as client:
        comment = await post_comment(client, alice)
        # Another request holds the key: simulate it by holding the same advisory lock.
        async with clean_store.connection() as holder:
            await holder.execute(
                "SELECT pg_advisory_lock(hashtextextended('alice' || chr(31) || 'k-9', 0))"
            )
            reply = await client.put(
                f"/api/comments/{comment}/vote",
                json={"value": 1},
                headers={**alice, "Idempotency-Key": "k-9"},
            )
            await holder.execute("SELECT pg_advisory_unlock_all()")
    assert_problem(reply, 409, "idempotency-key-in-flight")
    assert await count(clean_store, "events") == 1


async def test_an_expired_key_is_forgotten_and_cleaned_up(
    api: ApiFactory, settings: Settings, clean_store: AsyncConnectionPool[Any]
) -> None:
    alice = auth(settings, "alice")
    keyed = {**alice, "Idempotency-Key": "old"}
    async with api(idempotency_ttl_seconds=60) as client:
        comment = await post_comment(client, alice)
        url = f"/api/comments/{comment}/vote"
        await client.put(url, json={"value": 1}, headers=keyed)
        async with clean_store.connection() as conn:
            await conn.execute("UPDATE idempotency_keys SET created_at = now() - interval '2 min'")
        fresh = await client.put(url, json={"value": -1}, headers=keyed)
    assert fresh.status_code == 200 and "idempotent-replayed" not in fresh.headers
    assert fresh.json()["value"] == -1

    from command_api.idempotency import delete_expired_keys

    async with clean_store.connection() as conn:
        await conn.execute("UPDATE idempotency_keys SET created_at = now() - interval '2 min'")
        async with conn.cursor() as cur:
            assert await delete_expired_keys(cur, 60) == 1
    assert await count(clean_store, "idempotency_keys") == 0


async def test_votes_over_the_rate_limit_get_429_with_retry_after(
    api: ApiFactory, settings: Settings
) -> None:
    bob = auth(settings, "bob")
    async with api(
        vote_rate_limit=3, vote_rate_window_seconds=30, rate_limit_timeout_ms=5000
    ) as client:
        comment = await post_comment(client, auth(settings, "alice"))
        url = f"/api/comments/{comment}/vote"
        statuses = [
            (await client.put(url, json={"value": v}, headers=bob)).status_code for v in (1, -1, 1)
        ]
        limited = await client.put(url, json={"value": 0}, headers=bob)
        other = await client.put(url, json={"value": 1}, headers=auth(settings, "carol"))
    assert statuses == [200, 200, 200]
    assert_problem(limited, 429, "rate-limited")
    assert 1 <= int(limited.headers["retry-after"]) <= 30
    assert other.status_code == 200


def _token(claims: dict[str, Any], secret: str, algorithm: str = "HS256") -> dict[str, str]:
    return {"Authorization": f"Bearer {jwt.encode(claims, secret, algorithm=algorithm)}"}


BAD_REQUESTS: list[tuple[str, str, str, Any, int, str]] = [
    # (name, method, path, body or raw bytes, status, problem code)
    ("malformed json", "PUT", "{vote}", b'{"value":', 400, "malformed-body"),
    ("wrong type", "PUT", "{vote}", {"value": "up"}, 422, "validation-failed"),
    ("value out of range", "PUT", "{vote}", {"value": 2}, 422, "validation-failed"),
    ("unknown field", "PUT", "{vote}", {"value": 1, "extra": 1}, 422, "validation-failed"),
    ("body is an array", "PUT", "{vote}", [1], 422, "validation-failed"),
    (
        "empty content",
        "POST",
        "/api/comments",
        {"commentable_id": "p", "content": ""},
        422,
        "validation-failed",
    ),
    (
        "content too long",
        "POST",
        "/api/comments",
        {"commentable_id": "p", "content": "x" * 10_001},
        422,
        "validation-failed",
    ),
    (
        "bad commentable id",
        "POST",
        "/api/comments",
        {"commentable_id": "a b", "content": "x"},
        422,
        "validation-failed",
    ),
    (
        "commentable id too long",
        "POST",
        "/api/comments",
        {"commentable_id": "a" * 129, "content": "x"},
        422,
        "validation-failed",
    ),
    (
        "parent is not a uuid",
        "POST",
        "/api/comments",
        {"commentable_id": "p", "content": "x", "parent_id": "nope"},
        422,
        "validation-failed",
    ),
    ("huge body", "POST", "/api/comments", b"x" * (65 * 1024), 413, "http-413"),
    ("id is not a uuid", "PUT", "/api/comments/not-a-uuid/vote", {"value": 1}, 404, "http-404"),
    (
        "unknown comment",
        "PUT",
        f"/api/comments/{uuid4()}/vote",
        {"value": 1},
        404,
        "comment-not-found",
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
async def test_bad_input_gets_a_problem_and_writes_nothing(
    api: ApiFactory,
    settings: Settings,
    clean_store: AsyncConnectionPool[Any],
    method: str,
    path: str,
    body: Any,
    status: int,
    code: str,
) -> None:
    alice = auth(settings, "alice")
    async with api() as client:
        comment = await post_comment(client, alice)
        url = path.replace("{vote}", f"/api/comments/{comment}/vote")
        content = body if isinstance(body, bytes) else msgspec.json.encode(body)
        reply = await client.request(method, url, content=content, headers=alice)
    assert_problem(reply, status, code)
    assert await count(clean_store, "events") == 1


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer not.a.token"},
        _token({"sub": "alice", "exp": int(time.time()) - 120}, "tally-local-dev-secret-change-me"),
        _token(
            {"sub": "alice", "exp": int(time.time()) + 3600}, "some-other-secret-entirely!!!!!!"
        ),
        _token({"exp": int(time.time()) + 3600}, "tally-local-dev-secret-change-me"),
        _token({"sub": "alice", "exp": int(time.time()) + 3600}, "", algorithm="none"),
    ],
    ids=["missing", "garbage", "expired", "bad signature", "no sub", "alg none"],
)
async def test_bad_tokens_get_401_and_write_nothing(
    api: ApiFactory, clean_store: AsyncConnectionPool[Any], headers: dict[str, str]
) -> None:
    async with api(jwt_secret="tally-local-dev-secret-change-me") as client:
        reply = await client.post(
            "/api/comments", json={"commentable_id": "p", "content": "x"}, headers=headers
        )
    assert_problem(reply, 401, "unauthenticated")
    assert reply.headers["www-authenticate"].startswith("Bearer")
    assert await count(clean_store, "events") == 0


async def test_a_refused_request_is_logged_with_its_request_id_and_without_its_token(
    api: ApiFactory, settings: Settings
) -> None:
    forged = mint_token("alice", "not-the-secret", 300)
    captured = LogCapture()
    before = structlog.get_config()
    structlog.configure(processors=[structlog.contextvars.merge_contextvars, captured])
    try:
        async with api() as client:
            reply = await client.post(
                "/api/comments",
                json={"commentable_id": "p", "content": "x"},
                headers={"Authorization": f"Bearer {forged}", "X-Request-ID": "req-forged"},
            )
    finally:
        structlog.configure(**before)
    assert_problem(reply, 401, "unauthenticated")
    failed = [e for e in captured.entries if e["event"] == "request_failed"]
    assert len(failed) == 1, captured.entries
    assert failed[0]["correlation_id"] == "req-forged"
    assert (failed[0]["status"], failed[0]["problem"]) == (401, "unauthenticated")
    assert forged not in repr(captured.entries)
    assert forged.split(".")[2] not in repr(captured.entries)  # not even the signature


async def test_a_bad_idempotency_key_header_is_refused(api: ApiFactory, settings: Settings) -> None:
    headers = {**auth(settings, "alice"), "Idempotency-Key": "x" * 300}
    async with api() as client:
        reply = await client.post(
            "/api/comments", json={"commentable_id": "p", "content": "x"}, headers=headers
        )
    assert_problem(reply, 400, "validation-failed")
    assert "idempotency_key" in reply.json()["detail"]


async def test_health_ready_metrics_and_openapi_answer(api: ApiFactory, settings: Settings) -> None:
    async with api() as client:
        await post_comment(client, auth(settings, "alice"))
        assert (await client.get("/health")).json() == {"status": "ok"}
        ready = (await client.get("/ready")).json()
        public_metrics = await client.get("/metrics")
        schema = (await client.get("/schema/openapi.json")).json()
    assert ready["checks"] == {"postgres": "ok", "redis": "ok"}
    assert public_metrics.status_code == 404  # served on a metrics port of its own
    metrics = generate_latest(REGISTRY).decode()
    assert "tally_group_commit_batch_size_bucket" in metrics
    posted = 'method="POST",route="/api/comments",service="command_api",status="201"'
    count = re.search(rf"tally_http_request_duration_seconds_count{{{posted}}} (\S+)", metrics)
    assert count is not None and float(count.group(1)) >= 1
    operations = {op["operationId"] for path in schema["paths"].values() for op in path.values()}
    assert {"post_comment", "edit_comment", "delete_comment", "cast_vote", "retract_vote"} <= (
        operations
    )


async def test_ready_reports_a_dead_dependency(api: ApiFactory) -> None:
    async with api(redis_url="redis://127.0.0.1:1/0") as client:
        reply = await client.get("/ready")
    assert reply.status_code == 503
    assert reply.json()["checks"]["redis"].startswith("down")


async def test_a_commit_whose_reply_was_lost_is_read_back_not_answered_as_a_conflict(
    api: ApiFactory, settings: Settings, clean_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = unit_of_work.append_and_commit

    async def commit_then_lose_the_connection(*args: Any, **kwargs: Any) -> list[int]:
        await real(*args, **kwargs)  # committed on the server...
        raise CommitOutcomeUnknown("server closed the connection unexpectedly")  # ...reply lost

    alice = auth(settings, "alice")
    async with api() as client:
        monkeypatch.setattr(unit_of_work, "append_and_commit", commit_then_lose_the_connection)
        posted = await client.post(
            "/api/comments", json={"commentable_id": "p", "content": "hi"}, headers=alice
        )
        monkeypatch.setattr(unit_of_work, "append_and_commit", real)
    assert posted.status_code == 201, posted.text
    async with clean_store.connection() as conn:
        row = await (await conn.execute("SELECT max(position), count(*) FROM events")).fetchone()
    assert row == (posted.json()["position"], 1)
    assert await count(clean_store, "comments") == 1


async def test_a_commit_that_never_happened_answers_503_and_writes_nothing(
    api: ApiFactory, settings: Settings, clean_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def lose_the_connection_first(*args: Any, **kwargs: Any) -> list[int]:
        raise CommitOutcomeUnknown("server closed the connection unexpectedly")

    async with api() as client:
        monkeypatch.setattr(unit_of_work, "append_and_commit", lose_the_connection_first)
        posted = await client.post(
            "/api/comments",
            json={"commentable_id": "p", "content": "hi"},
            headers=auth(settings, "alice") | {"Idempotency-Key": "k-1"},
        )
    assert_problem(posted, 503, "store-unavailable")
    assert posted.headers["retry-after"] == "1"
    assert "Idempotency-Key" in posted.json()["detail"]
    assert await count(clean_store, "events") == 0
    assert await count(clean_store, "comments") == 0
