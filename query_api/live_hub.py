"""One Redis subscription per query-API process, fanned out to its live streams.

Every stream used to hold a Redis pub/sub connection of its own: a few thousand idle
``curl -N`` could exhaust file descriptors and Redis ``maxclients``. Now the hub holds one
pattern subscription (``tally:live:*``) and hands each message to the streams of its
commentable, through bounded queues: a client too slow to keep up is dropped, not buffered
without end. Streams are capped per process and per client address; closing the hub ends every
stream (a graceful shutdown).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter as Tally
from collections.abc import Iterator
from dataclasses import dataclass

import structlog
from prometheus_client import Counter, Gauge
from redis.asyncio import Redis
from redis.exceptions import RedisError

from kernel.redis_client import redis_away
from projectors.redis_keys import live_channel

log = structlog.get_logger(__name__)

STREAMS = Gauge("tally_live_streams", "Open live (SSE) streams", multiprocess_mode="livesum")
REFUSED = Counter("tally_live_streams_refused_total", "Live streams refused by a cap", ["cap"])
DROPPED = Counter("tally_live_streams_dropped_total", "Live streams dropped for being slow")

END = b""  # put in a stream's queue: the stream ends
UNCLAIMED_SECONDS = 10.0


@dataclass
class Reservation:
    """A stream slot held for a client until its stream ends."""

    client: str
    timer: asyncio.TimerHandle | None = None
    released: bool = False


class StreamsFull(Exception):
    """This process serves as many live streams as it may."""


class TooManyStreams(Exception):
    """This client holds as many live streams as it may."""


class LiveHub:
    """Routes live messages to the streams that asked for them."""

    def __init__(
        self, redis: Redis, max_streams: int, max_per_client: int, buffer: int = 256
    ) -> None:
        self._redis = redis
        self._max_streams = max_streams
        self._max_per_client = max_per_client
        self._buffer = buffer
        self._streams: dict[str, set[asyncio.Queue[bytes]]] = {}
        self._per_client: Tally[str] = Tally()
        self._open = 0
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.listening = asyncio.Event()  # set once subscribed (tests wait for it)

    def admit(self, client: str) -> Reservation:
        """Hold a slot for one more stream of ``client``; raise if that would pass a cap.

        The slot is counted at once (a burst of requests cannot all slip under the cap), and
        given back if no stream claims it within ``UNCLAIMED_SECONDS`` (the client went away
        before its stream started).
        """
        if self._open >= self._max_streams:
            REFUSED.labels("process").inc()
            raise StreamsFull(f"this server holds {self._max_streams} live streams already")
        if self._per_client[client] >= self._max_per_client:
            REFUSED.labels("client").inc()
            raise TooManyStreams(f"at most {self._max_per_client} live streams per client")
        self._per_client[client] += 1
        self._open += 1
        reservation = Reservation(client)
        reservation.timer = asyncio.get_running_loop().call_later(
            UNCLAIMED_SECONDS, self._release, reservation
        )
        return reservation

    def _release(self, reservation: Reservation) -> None:
        if reservation.released:
            return
        reservation.released = True
        if reservation.timer is not None:
            reservation.timer.cancel()
        self._open -= 1
        self._per_client[reservation.client] -= 1
        if not self._per_client[reservation.client]:
            del self._per_client[reservation.client]

    @contextlib.contextmanager
    def subscribe(
        self, commentable_id: str, reservation: Reservation
    ) -> Iterator[asyncio.Queue[bytes]]:
        """A queue of the commentable's messages for as long as the block lasts."""
        if reservation.timer is not None:
            reservation.timer.cancel()  # claimed
        queue: asyncio.Queue[bytes] = asyncio.Queue(self._buffer)
        self._streams.setdefault(commentable_id, set()).add(queue)
        STREAMS.inc()
        try:
            yield queue
        finally:
            STREAMS.dec()
            self._release(reservation)
            streams = self._streams.get(commentable_id, set())
            streams.discard(queue)
            if not streams:
                self._streams.pop(commentable_id, None)

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="live-hub")

    async def close(self) -> None:
        """End every stream, then stop listening (bounded: a connect in progress may not
        notice the cancellation at once)."""
        self._closing = True
        for streams in self._streams.values():
            for queue in streams:
                _end(queue)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._task, 2)

    async def _listen(self) -> None:
        prefix = live_channel("")
        delay = 0.5
        while not self._closing:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.psubscribe(live_channel("*"))
                self.listening.set()
                delay = 0.5
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None:
                        channel = message["channel"].decode()
                        self._route(channel.removeprefix(prefix), message["data"])
            except Exception as exc:  # Redis went away: streams wait, we retry
                if not redis_away(exc):
                    raise
                self.listening.clear()
                if self._closing:  # a cancelled connect can surface as a connection error
                    return
                log.warning("live_hub_reconnecting", error=repr(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _route(self, commentable_id: str, data: bytes) -> None:
        for queue in list(self._streams.get(commentable_id, ())):
            try:
                queue.put_nowait(data)
            except asyncio.QueueFull:  # a client that does not read: let it go
                DROPPED.inc()
                _end(queue)


def _end(queue: asyncio.Queue[bytes]) -> None:
    """Make ``queue``'s stream end at its next read, full or not."""
    while True:
        try:
            queue.put_nowait(END)
            return
        except asyncio.QueueFull:
            queue.get_nowait()
