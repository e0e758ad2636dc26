"""Coalesce concurrent calls made in the same event-loop tick into one batch call.

Many requests that each need one Redis round trip share one pipeline instead: one send and one
receive for all of them, which matters when system calls are the expensive part.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class TickBatcher(Generic[K, V]):
    """``await batcher.get(key)``: keys asked in one tick go to ``run`` together, in order."""

    def __init__(self, run: Callable[[list[K]], Awaitable[list[V]]]) -> None:
        self._run = run
        self._waiting: list[tuple[K, asyncio.Future[V]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def get(self, key: K) -> V:
        """The value for ``key``, computed with whatever else was asked in this tick."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[V] = loop.create_future()
        self._waiting.append((key, future))
        if len(self._waiting) == 1:
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        batch, self._waiting = self._waiting, []
        task = asyncio.create_task(self._answer(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, batch: list[tuple[K, asyncio.Future[V]]]) -> None:
        try:
            values = await self._run([key for key, _ in batch])
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), value in zip(batch, values, strict=True):
            if not future.done():
                future.set_result(value)
