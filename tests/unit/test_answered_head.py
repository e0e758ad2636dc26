"""The answered head: recorded before answers go out, shared by batches, never a stall."""

from __future__ import annotations

import asyncio
import time

from redis.exceptions import TimeoutError as RedisTimeoutError

from command_api.answered_head import HeadRecorder


class Redis:
    """A ``publish_head`` that takes ``delay`` seconds, or fails while ``down``."""

    def __init__(self, delay: float = 0.01) -> None:
        self.delay, self.down, self.heads = delay, False, list[int]()

    async def publish(self, head: int) -> None:
        await asyncio.sleep(self.delay)
        if self.down:
            raise RedisTimeoutError("no answer")
        self.heads.append(head)


async def test_an_answer_waits_until_its_head_is_recorded() -> None:
    redis = Redis(delay=0.05)
    recorder = HeadRecorder(redis.publish, timeout=1)
    await recorder.record(7)
    assert redis.heads == [7]
    await recorder.stop()


async def test_batches_answered_together_share_one_write() -> None:
    redis = Redis(delay=0.05)
    recorder = HeadRecorder(redis.publish, timeout=1)
    await asyncio.gather(*(recorder.record(head) for head in range(1, 21)))
    assert redis.heads[-1] == 20 and len(redis.heads) <= 2  # the first alone, then the rest
    await recorder.record(5)  # below the recorded head: nothing to write
    assert len(redis.heads) <= 2
    await recorder.stop()


async def test_a_stalled_redis_costs_one_timeout_then_nothing_until_it_answers() -> None:
    redis = Redis(delay=5)
    recorder = HeadRecorder(redis.publish, timeout=0.2)
    started = time.monotonic()
    await recorder.record(1)
    assert 0.15 < time.monotonic() - started < 1  # the first waits its timeout
    started = time.monotonic()
    for head in range(2, 50):
        await recorder.record(head)
    assert time.monotonic() - started < 0.1  # the others do not wait at all
    redis.delay = 0.01
    await asyncio.sleep(0.8)  # the writer's retry goes through
    assert redis.heads and redis.heads[-1] == 49
    redis.delay = 0.05
    started = time.monotonic()
    await recorder.record(60)
    assert redis.heads[-1] == 60 and time.monotonic() - started >= 0.04  # waits again
    await recorder.stop()


async def test_a_failing_redis_does_not_fail_the_answer() -> None:
    redis = Redis()
    redis.down = True
    recorder = HeadRecorder(redis.publish, timeout=0.5)
    await recorder.record(3)  # returns, unrecorded
    assert redis.heads == []
    redis.down = False
    await asyncio.sleep(0.7)
    assert redis.heads == [3]  # retried in the background
    await recorder.stop()
