"""Votes answered in front of the framework.

A vote is the command the API sees most, and litestar's layers around it (exception handling,
CORS, routing, dependency injection, signature parsing, response building) cost about a
quarter of a worker's CPU per vote. The lane answers a plain ``PUT
/api/comments/{id}/vote`` itself, through the same ``answer_command`` and the same problem
answers as the route, so the rate limit, idempotency, group commit and every error answer are
the route's.

Plain means, before anything is counted or written: a canonical UUID in the path, no query,
no tracing, no ``Origin`` (CORS), ``Content-Type: application/json``, a body within the limit
that is exactly a valid vote, an ``Idempotency-Key`` (if any) of the allowed form, a bearer
token that verifies, and none of the headers it reads given twice. Anything else goes to the
app with the body replayed, so the route answers it (a 400, 401, 413 or 422) as before.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable
from uuid import UUID

import msgspec
import structlog
from litestar.enums import ScopeType
from litestar.types import (
    ASGIApp,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    Receive,
    ReceiveMessage,
    Scope,
    Send,
)

from command_api.answers import Answer, answer_command
from command_api.deciders.vote import CastVote
from command_api.idempotency import request_fingerprint
from command_api.problems import command_problem
from command_api.services import CommandServices
from kernel import tracing
from kernel.auth import NotAuthenticated
from kernel.http_middleware import HEADER, REQUEST_SECONDS, correlation_id_of
from kernel.problems import PROBLEM_JSON, Problem, unexpected_problem
from schemas.api import VoteBody

VOTE_ROUTE = "/api/comments/{comment_id:uuid}/vote"
_HEX = "[0-9A-Fa-f]"
_VOTE = re.compile(
    rf"/api/comments/({_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}})/vote"
)
_KEY = re.compile(rb"[\x21-\x7e]{1,255}")  # the route's Idempotency-Key pattern
_READ = {b"authorization", b"content-type", b"content-length", b"idempotency-key", HEADER}
_ROUTED = {b"origin", b"traceparent"}
_decode_vote = msgspec.json.Decoder(VoteBody).decode
_PROBLEM_JSON = PROBLEM_JSON.encode()


def fast_lane(
    app: ASGIApp, services: Callable[[], CommandServices], service: str, max_body_bytes: int
) -> ASGIApp:
    """``app`` with plain votes answered before it."""
    observers: dict[int, Callable[[float], None]] = {}

    def observe(status: int, seconds: float) -> None:
        if status not in observers:
            observers[status] = REQUEST_SECONDS.labels(
                service, "PUT", VOTE_ROUTE, str(status)
            ).observe
        observers[status](seconds)

    async def lane(scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != ScopeType.HTTP
            or scope["method"] != "PUT"
            or scope["query_string"]
            or tracing.tracer() is not None
            or (match := _VOTE.fullmatch(scope["path"])) is None
        ):
            await app(scope, receive, send)
            return
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            if name in _ROUTED or name in headers:
                await app(scope, receive, send)
                return
            if name in _READ:
                headers[name] = value
        declared = headers.get(b"content-length", b"0")
        key = headers.get(b"idempotency-key")
        if (
            headers.get(b"content-type") != b"application/json"
            or b"authorization" not in headers
            or not declared.isdigit()
            or int(declared) > max_body_bytes
            or (key is not None and _KEY.fullmatch(key) is None)
        ):
            await app(scope, receive, send)
            return
        started = time.perf_counter()
        read, body = await _read_body(receive, max_body_bytes)
        try:
            if body is None:
                raise ValueError("no whole body within the limit")
            vote = _decode_vote(body)
            user_id = await services().verifier.user_of(headers[b"authorization"].decode("latin-1"))
        except (ValueError, msgspec.MsgspecError, NotAuthenticated):
            await app(scope, _replaying(read, receive), send)  # the route says what is wrong
            return
        await _answer(scope, send, body, match[1], vote, user_id, key, headers, started)

    async def _answer(
        scope: Scope,
        send: Send,
        body: bytes,
        comment_id: str,
        vote: VoteBody,
        user_id: str,
        key: bytes | None,
        headers: dict[bytes, bytes],
        started: float,
    ) -> None:
        path: str = scope["path"]
        request_id = correlation_id_of(headers.get(HEADER, b""))
        structlog.contextvars.bind_contextvars(correlation_id=request_id)
        answer: Answer | Problem
        try:
            answer = await answer_command(
                services(),
                CastVote(comment_id=UUID(comment_id), user_id=user_id, value=vote.value),
                user_id,
                "vote",
                key.decode() if key is not None else None,
                request_fingerprint("PUT", path, body) if key is not None else b"",
                request_id,
            )
            media = b"application/json"
        except Exception as exc:
            answer = command_problem(exc, path) or unexpected_problem(path)
            media = _PROBLEM_JSON
        finally:
            structlog.contextvars.unbind_contextvars("correlation_id")
        extra = answer.headers or {}
        headers_out = [
            (b"content-type", media),
            (b"content-length", b"%d" % len(answer.body)),
            *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()),
            (HEADER, request_id.encode()),
        ]
        start = HTTPResponseStartEvent(
            type="http.response.start", status=answer.status, headers=headers_out
        )
        await send(start)
        await send(
            HTTPResponseBodyEvent(type="http.response.body", body=answer.body, more_body=False)
        )
        observe(answer.status, time.perf_counter() - started)

    return lane


async def _read_body(receive: Receive, limit: int) -> tuple[list[ReceiveMessage], bytes | None]:
    """The messages read and the whole body, or ``None`` for the body when it grew past
    ``limit`` or the client left before sending it all."""
    read: list[ReceiveMessage] = []
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        read.append(message)
        if message["type"] != "http.request":
            return read, None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return read, None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return read, b"".join(chunks)


def _replaying(read: list[ReceiveMessage], receive: Receive) -> Receive:
    """``receive`` that gives the already-read messages first."""
    pending = deque(read)

    async def replay() -> ReceiveMessage:
        return pending.popleft() if pending else await receive()

    return replay
