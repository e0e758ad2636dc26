"""Coalesce concurrent calls into one batch call, without letting one caller hurt another.

Many requests that each need one Redis round trip share one pipeline instead: one send and one
receive for all of them, which matters when system calls are the expensive part. A batch call
that fails as a whole is run again one caller at a time (``one_by_one_on_failure``), so an
exception one caller's input causes (a key that cannot be encoded, say) reaches that caller
only, never the others it happened to be batched with.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


async def one_by_one_on_failure(
    run: Callable[[list[K]], Awaitable[Sequence[V]]], keys: list[K]
) -> list[V | Exception]:
    """``run(keys)``'s values; if it raises for several keys, each key runs alone, and each
    gets its own value or its own exception."""
    try:
        return list(await run(keys))
    except Exception as exc:
        if len(keys) == 1:
            return [exc]
    results: list[V | Exception] = []
    for key in keys:
        try:
            results.append((await run([key]))[0])
        except Exception as exc:
            results.append(exc)
    return results


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
        values = await one_by_one_on_failure(self._run, [key for key, _ in batch])
        for (_, future), value in zip(batch, values, strict=True):
            if future.done():
                continue
            if isinstance(value, Exception):
                future.set_exception(value)
            else:
                future.set_result(value)
