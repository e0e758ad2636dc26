"""``GET /api/commentables/{id}/live``: score changes and new, edited and deleted comments as
Server-Sent Events.

Each event is a change published by the Redis projector (``event:`` ``score``,
``comment_created``, ``comment_edited`` or ``comment_deleted``; ``id`` the event's position),
fanned out by the process's ``LiveHub`` (one Redis subscription for all streams). A comment
line every ``HEARTBEAT_S`` keeps proxies from closing the stream and finds clients that went
away. With ``Last-Event-ID``, the stream starts with the current counts of every comment (of the
commentable's 2,000 newest) changed after that position: pub/sub keeps no history, so the resume
sends the latest state rather than each missed change; at most ``RESUMES`` at a time per
process, and reconnects are rate-limited per address block. Streams are capped per process
(503), per client address block and per signed-in user (429). A stream that cannot write a
message within ``WRITE_SECONDS`` (its client stopped reading) is closed, giving back its slot.
Anonymous by default, since browsers' EventSource cannot send a bearer token.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
from litestar import Request, get
from litestar.datastructures import State
from litestar.enums import ScopeType
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import HeaderParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import Counter

from kernel.client_address import address_block
from kernel.web_contract import problems
from projectors.redis_keys import comment_key, ranking_key
from query_api.consistency import parse_position
from query_api.live_hub import END, LiveHub, Reservation
from query_api.routes import CommentablePath

SLOW_CLOSED = Counter(
    "tally_live_streams_stalled_total", "Live streams closed because their client stopped reading"
)
_STREAM = "tally_live_stream"
HEARTBEAT_S = 15.0
WRITE_SECONDS = 10.0
RESUMES = 4
_resuming = asyncio.Semaphore(RESUMES)


class _Published(msgspec.Struct):
    """What every message on a live channel has (``projectors/redis_scores.lua``)."""

    position: int
    type: str = "score"  # or comment_created, comment_edited, comment_deleted


RESUME_LIMIT = 2000


async def _missed(state: State, commentable_id: str, after: int) -> list[dict[str, Any]]:
    redis = state.redis_reads.redis
    generation = await state.redis_reads.generation()
    newest = ranking_key(generation, commentable_id, "new")
    ids = [i.decode() for i in await redis.zrevrange(newest, 0, RESUME_LIMIT - 1)]
    async with redis.pipeline(transaction=False) as pipe:
        for comment_id in ids:
            pipe.hmget(comment_key(generation, commentable_id, comment_id), ["up", "down", "pos"])
        rows = await pipe.execute()
    changes = [
        {
            "comment_id": c,
            "up": int(r[0] or 0),
            "down": int(r[1] or 0),
            "score": int(r[0] or 0) - int(r[1] or 0),
            "position": int(r[2] or 0),
        }
        for c, r in zip(ids, rows, strict=True)
        if int(r[2] or 0) > after
    ]
    return sorted(changes, key=lambda change: change["position"])


async def _stream(
    state: State, commentable_id: str, last_id: int | None, reservation: Reservation
) -> AsyncIterator[ServerSentEventMessage]:
    hub: LiveHub = state.live
    with hub.subscribe(commentable_id, reservation) as queue:
        yield ServerSentEventMessage(comment="subscribed", data=None)
        if last_id is not None:
            async with _resuming:
                missed = await _missed(state, commentable_id, last_id)
            for change in missed:
                yield ServerSentEventMessage(
                    data=msgspec.json.encode(change).decode(),
                    event="score",
                    id=str(change["position"]),
                )
        while True:
            try:
                data = await asyncio.wait_for(queue.get(), HEARTBEAT_S)
            except TimeoutError:
                yield ServerSentEventMessage(comment="heartbeat", data=None)
                continue
            if data == END:
                return
            try:
                message = msgspec.json.decode(data, type=_Published)
            except msgspec.DecodeError:  # not from a projector of this version: skip it
                continue
            yield ServerSentEventMessage(
                data=data.decode(), event=message.type, id=str(message.position)
            )


@get(
    "/api/commentables/{commentable_id:str}/live",
    operation_id="stream_scores",
    summary="Live scores and comments (SSE)",
    responses={
        200: ResponseSpec(
            str,
            description="A text/event-stream: events score, comment_created, comment_edited and "
            "comment_deleted, each with data (JSON) and id (its position)",
            media_type="text/event-stream",
            generate_examples=False,
        ),
        **problems(400, 429, 503),
    },
)
async def stream_scores(
    request: Request[Any, Any, Any],
    state: State,
    commentable_id: CommentablePath,
    last_event_id: Annotated[
        str | None,
        HeaderParameter(
            name="Last-Event-ID",
            required=False,
            description="Resume after this position: the stream opens with what changed since "
            "(anything but a position starts afresh)",
        ),
    ] = None,
) -> ServerSentEvent:
    """Score changes and new, edited and deleted comments of a commentable, as they happen."""
    last_id = parse_position(last_event_id) if last_event_id else None
    client = address_block(request.client.host if request.client else "unknown")
    header = request.headers.get("authorization")
    user = None if header is None else await state.verifier.user_of(header)
    reservation = state.live.admit(client, user)
    stream = _stream(state, commentable_id, last_id, reservation)
    # Kept where ``bounded_writes`` finds it: a stalled stream is closed there, at once.
    request.scope.setdefault("state", {})[_STREAM] = stream
    return ServerSentEvent(stream)


def bounded_writes(app: ASGIApp, seconds: float = WRITE_SECONDS) -> ASGIApp:
    """``app`` whose live streams fail a write that waits longer than ``seconds`` (the client
    reads nothing and its socket is full): the connection closes and the slot is free again."""

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or not scope["path"].endswith("/live"):
            await app(scope, receive, send)
            return

        async def send_in_time(message: Message) -> None:
            try:
                await asyncio.wait_for(send(message), seconds)
            except TimeoutError:
                SLOW_CLOSED.inc()
                stream = scope.get("state", {}).get(_STREAM)
                if stream is not None:  # its slot and subscription go now, not at collection
                    with contextlib.suppress(Exception):
                        await stream.aclose()
                raise

        await app(scope, receive, send_in_time)

    return guarded
