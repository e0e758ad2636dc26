"""``GET /api/commentables/{id}/live``: score changes and new, edited and deleted comments as
Server-Sent Events.

Each event is a change published by the Redis projector (``event:`` ``score``,
``comment_created``, ``comment_edited`` or ``comment_deleted``; ``id`` the event's position),
fanned out by the process's ``LiveHub`` (one Redis subscription for all streams). A comment
line every ``HEARTBEAT_S`` keeps proxies from closing the stream and finds clients that went
away. With ``Last-Event-ID``, the stream starts with the current counts of every comment (of the
commentable's 2,000 newest) changed after that position: pub/sub keeps no history, so the resume
sends the latest state rather than each missed change. Streams are capped per process (503) and
per client address (429); anonymous, since browsers' EventSource cannot send a bearer token.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
from litestar import Request, get
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, Parameter
from litestar.response import ServerSentEvent, ServerSentEventMessage

from kernel.web_contract import problems
from projectors.redis_keys import comment_key, ranking_key
from query_api.consistency import parse_position
from query_api.live_hub import END, LiveHub, Reservation

HEARTBEAT_S = 15.0


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
            for change in await _missed(state, commentable_id, last_id):
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
    commentable_id: FromPath[str],
    last_event_id: Annotated[
        str | None,
        Parameter(
            header="Last-Event-ID",
            required=False,
            description="Resume after this position: the stream opens with what changed since "
            "(anything but a position starts afresh)",
        ),
    ] = None,
) -> ServerSentEvent:
    """Score changes and new, edited and deleted comments of a commentable, as they happen."""
    last_id = parse_position(last_event_id) if last_event_id else None
    client = request.client.host if request.client else "unknown"
    reservation = state.live.admit(client)
    return ServerSentEvent(_stream(state, commentable_id, last_id, reservation))
