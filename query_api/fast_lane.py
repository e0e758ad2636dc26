"""The hottest reads, answered in front of the framework.

A score read is one Redis lookup, yet litestar's layers around it (exception handling, CORS,
routing, parameter parsing, response building) cost several times that lookup. The lane
answers the plain cases itself, with the body and headers the routes send:

- ``GET /api/comments/{id}/score``: from Redis.
- ``GET /api/commentables/{id}/comments?sort=&limit=`` (a first page, anonymous): the route's
  own answer, kept for ``page_cache_s`` and shared by every reader of that page. The page
  already says ``Cache-Control: max-age=1``; this keeps the copy in the process instead of
  rebuilding 50 comments per request. Set it to 0 to turn the copy off.

Plain means: no ``X-Tally-Min-Position`` or ``min_position`` (read-your-writes always goes to
the route), no ``Origin`` (CORS), no bearer token, no ``If-None-Match``, no cursor, no tracing.
Everything else, and every answer that is not a 200 (a wait, Redis down or lost, an unknown
comment, a bad id), goes to the app, whose routes answer as before.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any, cast
from uuid import UUID

import msgspec
from litestar.enums import ScopeType
from litestar.types import (
    ASGIApp,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    Message,
    Receive,
    Scope,
    Send,
)

from kernel import tracing
from kernel.bounded_cache import BoundedCache
from kernel.http_middleware import HEADER, REQUEST_SECONDS, correlation_id_of
from query_api.redis_reads import RedisReads
from query_api.views import ScoreOut
from schemas.api import COMMENTABLE_ID_CHARS, COMMENTABLE_ID_MAX

SCORE_ROUTE = "/api/comments/{comment_id:uuid}/score"
PAGE_ROUTE = "/api/commentables/{commentable_id:str}/comments"
_SCORE = re.compile(r"/api/comments/([0-9A-Fa-f-]{32,36})/score")
# Only a well-formed commentable id: anything else goes to the route, which refuses it (400).
_PAGE = re.compile(
    rf"/api/commentables/[{COMMENTABLE_ID_CHARS}]{{1,{COMMENTABLE_ID_MAX}}}/comments"
)
_PAGE_QUERY = re.compile(rb"(?:(?:sort|limit)=[0-9a-z]{1,20}(?:&|$)){0,2}")
# Headers that ask for more than the shared answer: the routes handle them.
_ROUTED = {b"origin", b"x-tally-min-position", b"authorization", b"if-none-match"}
PAGE_CACHE_BYTES = 16 * 1024 * 1024  # per process, whatever the commentables asked for
_encode = msgspec.json.Encoder().encode


def fast_lane(
    app: ASGIApp, reads: Callable[[], RedisReads], service: str, page_cache_s: float
) -> ASGIApp:
    """``app`` with plain score reads and first pages answered before it."""
    observe_score = REQUEST_SECONDS.labels(service, "GET", SCORE_ROUTE, "200").observe
    observe_page = REQUEST_SECONDS.labels(service, "GET", PAGE_ROUTE, "200").observe
    pages: BoundedCache[tuple[str, bytes], tuple[list[tuple[bytes, bytes]], bytes]] = BoundedCache(
        PAGE_CACHE_BYTES
    )
    # Pages being built: when a copy expires, one reader rebuilds it and the rest wait for it.
    building: dict[tuple[str, bytes], asyncio.Future[None]] = {}

    async def answer(send: Send, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        await send(HTTPResponseStartEvent(type="http.response.start", status=200, headers=headers))
        await send(HTTPResponseBodyEvent(type="http.response.body", body=body, more_body=False))

    async def score(comment_id: str, request_id: bytes, send: Send) -> bool:
        started = time.perf_counter()
        try:
            comment_id = str(UUID(comment_id))
            counts = await reads().score(comment_id)
        except Exception:
            return False  # a bad id or a store error: the route answers it as a problem
        if counts is None:
            return False
        body = _encode(ScoreOut(comment_id, counts.up, counts.down, counts.score))
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(body)),
            (b"x-tally-position", b"%d" % counts.position),
            (HEADER, request_id),
        ]
        await answer(send, headers, body)
        observe_score(time.perf_counter() - started)
        return True

    async def page(scope: Scope, receive: Receive, send: Send, request_id: bytes) -> None:
        started = time.perf_counter()
        key = (scope["path"], scope["query_string"])
        kept = pages.get(key, started)
        if kept is None and key in building:
            await asyncio.shield(building[key])  # one reader builds it; the others wait
            kept = pages.get(key, started)
        if kept is not None:
            await answer(send, [*kept[0], (HEADER, request_id)], kept[1])
            observe_page(time.perf_counter() - started)
            return
        reply: dict[str, Any] = {"body": []}

        async def keep(message: Message) -> None:
            if message["type"] == "http.response.start":
                reply["status"] = message["status"]
                reply["headers"] = [h for h in message.get("headers", []) if h[0] != HEADER]
            elif reply.get("status") == 200:
                reply["body"].append(cast(bytes, message.get("body", b"")))
                if not message.get("more_body", False):
                    body = b"".join(reply["body"])
                    size = len(body) + len(key[0]) + len(key[1]) + 256
                    pages.sweep(started)
                    pages.put(key, (reply["headers"], body), size, started + page_cache_s)
            await send(message)

        built = building[key] = asyncio.get_running_loop().create_future()
        try:
            await app(scope, receive, keep)
        finally:
            if building.get(key) is built:  # a failed build's waiters may each build anew
                del building[key]
            built.set_result(None)

    async def lane(scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != ScopeType.HTTP
            or scope["method"] != "GET"
            or tracing.tracer() is not None
        ):
            await app(scope, receive, send)
            return
        path: str = scope["path"]
        score_match = None if scope["query_string"] else _SCORE.fullmatch(path)
        is_page = (
            page_cache_s > 0
            and score_match is None
            and _PAGE.fullmatch(path) is not None
            and _PAGE_QUERY.fullmatch(scope["query_string"]) is not None
        )
        if score_match is None and not is_page:
            await app(scope, receive, send)
            return
        incoming = b""
        for name, value in scope["headers"]:
            if name in _ROUTED:
                await app(scope, receive, send)
                return
            if name == HEADER:
                incoming = value
        request_id = correlation_id_of(incoming).encode()
        if score_match is not None:
            if not await score(score_match[1], request_id, send):
                await app(scope, receive, send)
        else:
            await page(scope, receive, send, request_id)

    return lane
