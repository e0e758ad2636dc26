"""``GET /api/commentables/{id}/live``: score changes as Server-Sent Events.

Each event is a score change published by the Redis projector (``event: score``, ``id`` the
event's position). A comment line every ``HEARTBEAT_S`` keeps proxies from closing the stream.
With ``Last-Event-ID``, the stream starts with the current counts of every comment (of the
commentable's 2,000 newest) changed after that position: pub/sub keeps no history, so the
resume sends the latest state rather than each missed change. The subscription is released in
``finally``, so a client that goes away leaks nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
from litestar import Request, get
from litestar.datastructures import State
from litestar.params import FromPath
from litestar.response import ServerSentEvent, ServerSentEventMessage
from prometheus_client import Gauge

from projectors.redis_keys import comment_key, live_channel, ranking_key

HEARTBEAT_S = 15.0
RESUME_LIMIT = 2000
STREAMS = Gauge("tally_live_streams", "Open live (SSE) streams", multiprocess_mode="livesum")


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
    state: State, commentable_id: str, last_id: int | None
) -> AsyncIterator[ServerSentEventMessage]:
    pubsub = state.redis_reads.redis.pubsub()
    await pubsub.subscribe(live_channel(commentable_id))
    STREAMS.inc()
    try:
        yield ServerSentEventMessage(comment="subscribed")
        if last_id is not None:
            for change in await _missed(state, commentable_id, last_id):
                yield ServerSentEventMessage(
                    data=msgspec.json.encode(change).decode(),
                    event="score",
                    id=str(change["position"]),
                )
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=HEARTBEAT_S)
            if message is None:
                yield ServerSentEventMessage(comment="heartbeat")
                continue
            data = message["data"].decode()
            position = msgspec.json.decode(data)["position"]
            yield ServerSentEventMessage(data=data, event="score", id=str(position))
    finally:
        STREAMS.dec()
        await pubsub.unsubscribe()
        await pubsub.aclose()


@get(
    "/api/commentables/{commentable_id:str}/live",
    operation_id="stream_scores",
    summary="Live scores (SSE)",
)
async def stream_scores(
    request: Request[Any, Any, Any], state: State, commentable_id: FromPath[str]
) -> ServerSentEvent:
    """Score changes in a commentable, as they happen."""
    raw = request.headers.get("last-event-id")
    last_id = int(raw) if raw and raw.isdigit() else None
    return ServerSentEvent(_stream(state, commentable_id, last_id))
