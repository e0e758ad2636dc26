"""Which votes the command API's fast lane answers itself, and which it hands to the app with
the body intact (pure ASGI, in-memory services)."""

from __future__ import annotations

import uuid
from typing import Any, cast

import msgspec
import pytest
import structlog

from command_api.fast_lane import fast_lane
from command_api.rate_limit import RateLimited
from command_api.services import CommandServices
from command_api.work import Accepted, Outcome, WorkItem
from kernel.auth import TokenVerifier, mint_token
from kernel.limits import Quota
from kernel.problems import PROBLEM_JSON

SECRET = "a-unit-test-secret-that-is-long-enough"
COMMENT = str(uuid.uuid4())
LIMIT = 1024


class _App:
    """Stands for the litestar app: records the body it was given."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        self.bodies.append(body)
        await send({"type": "http.response.start", "status": 418, "headers": []})
        await send({"type": "http.response.body", "body": b"app"})


class _Limiter:
    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse
        self.checks = 0

    async def check(self, user_id: str, action: str) -> Quota:
        self.checks += 1
        if self.refuse:
            raise RateLimited(action, Quota(120, 0, 60, retry_after=7))
        return Quota(120, 119, 1)

    async def refund(self, user_id: str, action: str) -> None:
        self.checks -= 1


class _Commands:
    def __init__(self, outcome: Outcome | None = None) -> None:
        self.items: list[WorkItem] = []
        self.outcome = outcome
        self.correlation_ids: list[Any] = []

    async def submit(self, item: WorkItem) -> Outcome:
        self.items.append(item)
        self.correlation_ids.append(structlog.contextvars.get_contextvars().get("correlation_id"))
        return self.outcome or Accepted(200, b'{"ok":true}')


def _services(commands: _Commands, limiter: _Limiter) -> CommandServices:
    return CommandServices(
        submit=commands.submit, rate_limiter=limiter, verifier=TokenVerifier(SECRET)
    )


def _headers(user: str = "alice", **extra: bytes) -> list[tuple[bytes, bytes]]:
    token = mint_token(user, SECRET, 60).encode()
    base = {b"authorization": b"Bearer " + token, b"content-type": b"application/json"}
    base |= {k.replace("_", "-").encode(): v for k, v in extra.items()}
    return list(base.items())


async def _put(
    lane: Any,
    chunks: list[bytes],
    headers: list[tuple[bytes, bytes]],
    path: str = f"/api/comments/{COMMENT}/vote",
    query: bytes = b"",
    method: str = "PUT",
) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    pending = [
        {"type": "http.request", "body": chunk, "more_body": n < len(chunks) - 1}
        for n, chunk in enumerate(chunks)
    ]

    async def receive() -> dict[str, Any]:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "query_string": query}
    await lane(scope | {"headers": headers}, receive, send)
    return sent


def _lane(app: _App, commands: _Commands, limiter: _Limiter | None = None) -> Any:
    services = _services(commands, limiter or _Limiter())
    return fast_lane(cast(Any, app), lambda: services, "test", LIMIT)


async def test_a_plain_vote_is_answered_without_the_app() -> None:
    app, commands = _App(), _Commands()
    sent = await _put(_lane(app, commands), [b'{"val', b'ue":-1}'], _headers(x_request_id=b"req-1"))
    assert app.bodies == []
    assert sent[0]["status"] == 200
    headers = dict(sent[0]["headers"])
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"ratelimit-remaining"] == b"119"
    assert headers[b"x-request-id"] == b"req-1"
    assert int(headers[b"content-length"]) == len(sent[1]["body"]) and sent[1]["body"]
    [item] = commands.items
    assert (item.user_id, str(item.command.comment_id), item.command.value) == (  # type: ignore[attr-defined]
        "alice",
        COMMENT,
        -1,
    )
    assert item.origin.correlation_id == "req-1" and commands.correlation_ids == ["req-1"]
    assert item.idempotency_key is None and item.request_hash == b""


async def test_an_idempotency_key_travels_with_the_request_fingerprint() -> None:
    app, commands = _App(), _Commands(Accepted(200, b"{}", replayed=True))
    limiter = _Limiter()
    sent = await _put(
        _lane(app, commands, limiter), [b'{"value":1}'], _headers(idempotency_key=b"k-1")
    )
    assert dict(sent[0]["headers"])[b"idempotent-replayed"] == b"true"
    assert commands.items[0].idempotency_key == "k-1"
    assert len(commands.items[0].request_hash) == 32
    assert limiter.checks == 0  # a replay is refunded


@pytest.mark.parametrize(
    ("chunks", "headers", "path", "query", "method"),
    [
        ([b'{"value":"1"}'], _headers(), None, b"", "PUT"),  # wrong type
        ([b'{"value":2}'], _headers(), None, b"", "PUT"),  # not a vote
        ([b'{"value":1,"x":0}'], _headers(), None, b"", "PUT"),  # unknown field
        ([b'{"value":1}x'], _headers(), None, b"", "PUT"),  # trailing bytes
        ([b""], _headers(), None, b"", "PUT"),  # no body
        ([b'{"value":1}'], _headers()[1:], None, b"", "PUT"),  # no token
        ([b'{"value":1}'], [(b"authorization", b"Bearer nope"), *_headers()[1:]], None, b"", "PUT"),
        ([b'{"value":1}'], [*_headers(), (b"authorization", b"Bearer x")], None, b"", "PUT"),
        ([b'{"value":1}'], _headers(content_type=b"text/plain"), None, b"", "PUT"),
        ([b'{"value":1}'], _headers(origin=b"https://a.example"), None, b"", "PUT"),
        ([b'{"value":1}'], _headers(traceparent=b"00-ab-cd-01"), None, b"", "PUT"),
        ([b'{"value":1}'], _headers(idempotency_key=b"with space"), None, b"", "PUT"),
        ([b'{"value":1}'], _headers(content_length=b"99999"), None, b"", "PUT"),
        ([b"{" * 600, b" " * 600], _headers(), None, b"", "PUT"),  # grows past the limit
        ([b'{"value":1}'], _headers(), None, b"dry=1", "PUT"),
        (
            [b'{"value":1}'],
            _headers(),
            f"/api/comments/{COMMENT.replace('-', '')}/vote",
            b"",
            "PUT",
        ),
        ([b'{"value":1}'], _headers(), f"/api/comments/{COMMENT}/vote/", b"", "PUT"),
        ([b""], _headers(), None, b"", "DELETE"),
    ],
)
async def test_anything_but_a_plain_vote_reaches_the_app_with_its_body(
    chunks: list[bytes],
    headers: list[tuple[bytes, bytes]],
    path: str | None,
    query: bytes,
    method: str,
) -> None:
    app, commands = _App(), _Commands()
    limiter = _Limiter()
    lane = _lane(app, commands, limiter)
    sent = await _put(lane, chunks, headers, path or f"/api/comments/{COMMENT}/vote", query, method)
    assert sent[0]["status"] == 418
    assert app.bodies == [b"".join(chunks)]
    assert commands.items == [] and limiter.checks == 0


async def test_refusals_after_the_checks_are_the_routes_problems() -> None:
    app, commands = _App(), _Commands()
    sent = await _put(_lane(app, commands, _Limiter(refuse=True)), [b'{"value":1}'], _headers())
    headers = dict(sent[0]["headers"])
    assert (sent[0]["status"], headers[b"retry-after"]) == (429, b"7")
    assert headers[b"content-type"] == PROBLEM_JSON.encode()
    assert headers[b"ratelimit-remaining"] == b"0"
    problem = msgspec.json.decode(sent[1]["body"])
    assert problem["type"] == "urn:tally:problem:rate-limited"
    assert problem["instance"] == f"/api/comments/{COMMENT}/vote"
    assert commands.items == [] and app.bodies == []


async def test_an_unexpected_error_is_a_500_that_leaks_nothing() -> None:
    app, commands = _App(), _Commands(RuntimeError("secret detail"))
    sent = await _put(_lane(app, commands), [b'{"value":0}'], _headers())
    problem = msgspec.json.decode(sent[1]["body"])
    assert (sent[0]["status"], problem["type"]) == (500, "urn:tally:problem:internal-error")
    assert "secret" not in sent[1]["body"].decode()
    assert structlog.contextvars.get_contextvars().get("correlation_id") is None
