"""One Redis subscription per query-API process, fanned out to its live streams.

Every stream used to hold a Redis pub/sub connection of its own: a few thousand idle
``curl -N`` could exhaust file descriptors and Redis ``maxclients``. Now the hub holds one
pattern subscription (``tally:live:*``) and hands each message to the streams of its
commentable, through bounded queues: a client too slow to keep up is dropped, not buffered
without end. Streams are capped per process, per client address block (an IPv4 address or an
IPv6 /64, ``kernel.client_address``) and per signed-in user; reconnects are rate-limited per
address block (each resume with ``Last-Event-ID`` reads up to ``RESUME_LIMIT`` comments from
Redis); closing the hub ends every stream (a graceful shutdown).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import structlog
from prometheus_client import Counter, Gauge
from redis.asyncio import Redis
from redis.exceptions import RedisError

from kernel.redis_client import redis_away
from projectors.redis_keys import live_channel
from query_api.consistency import ProgressWatch

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
    user: str | None = None
    timer: asyncio.TimerHandle | None = None
    released: bool = False


class StreamsFull(Exception):
    """This process serves as many live streams as it may."""


class TooManyStreams(Exception):
    """This client holds as many live streams as it may, or reconnects too often."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ReconnectBudget:
    """At most ``burst`` stream opens per address block, refilled at ``per_second`` (GCRA in
    memory: a reconnect storm never reaches Redis)."""

    def __init__(
        self, burst: int = 10, per_second: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._interval = 1.0 / per_second
        self._burst = burst
        self._clock = clock
        self._due: dict[str, float] = {}  # block -> theoretical arrival time

    def take(self, block: str) -> float:
        """Count one open; the seconds to wait before another is allowed (0: allowed now)."""
        now = self._clock()
        due = max(self._due.get(block, now), now)
        if due - now > (self._burst - 1) * self._interval:
            return due - now - (self._burst - 1) * self._interval
        if len(self._due) > 100_000:
            self._due = {k: v for k, v in self._due.items() if v > now}
        self._due[block] = due + self._interval
        return 0.0


class LiveHub:
    """Routes live messages to the streams that asked for them."""

    def __init__(
        self,
        redis: Redis,
        max_streams: int,
        max_per_client: int,
        buffer: int = 256,
        max_per_user: int | None = None,
        reconnects: ReconnectBudget | None = None,
        watch: ProgressWatch | None = None,
        progress: str = "",
    ) -> None:
        self._redis = redis
        self.watch = watch or ProgressWatch()
        self._progress = progress  # the channel of mark announcements (none: not followed)
        self._max_streams = max_streams
        self._max_per_client = max_per_client
        self._max_per_user = max_per_user or max_per_client
        self._buffer = buffer
        # An address may open as many streams at once as it may hold, then one a second.
        self._reconnects = reconnects or ReconnectBudget(burst=max(max_per_client, 1))
        self._streams: dict[str, set[asyncio.Queue[bytes]]] = {}
        self._per_client: Tally[str] = Tally()
        self._per_user: Tally[str] = Tally()
        self._open = 0
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.listening = asyncio.Event()  # set once subscribed (tests wait for it)

    def admit(self, client: str, user: str | None = None) -> Reservation:
        """Hold a slot for one more stream of the address block ``client`` (and ``user``, when
        signed in); raise if that would pass a cap or the reconnect budget.

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
        if user is not None and self._per_user[user] >= self._max_per_user:
            REFUSED.labels("user").inc()
            raise TooManyStreams(f"at most {self._max_per_user} live streams per user")
        wait = self._reconnects.take(client)
        if wait:
            REFUSED.labels("reconnects").inc()
            raise TooManyStreams("reconnecting too often", retry_after=max(1, round(wait)))
        self._per_client[client] += 1
        if user is not None:
            self._per_user[user] += 1
        self._open += 1
        reservation = Reservation(client, user)
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
        for counts, key in (
            (self._per_client, reservation.client),
            (self._per_user, reservation.user),
        ):
            if key is not None:
                counts[key] -= 1
                if not counts[key]:
                    del counts[key]

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
                if self._progress:
                    await pubsub.subscribe(self._progress)
                self.listening.set()
                delay = 0.5
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is None:
                        continue
                    if message["type"] == "message":
                        self._announce(message["data"])
                    else:
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

    def _announce(self, data: bytes) -> None:
        """A projection's new low-water mark, or the answered head: "<name> <mark>"."""
        name, _, mark = data.decode(errors="replace").partition(" ")
        if mark.isascii() and mark.isdigit():
            self.watch.announce(name, int(mark))

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
