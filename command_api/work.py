"""What the command side passes around: a command with its request, and its outcome.

Every way of running commands (one PostgreSQL transaction per batch, the in-memory store of
the unit tests) takes ``WorkItem`` batches and answers one ``Outcome`` per item, in order.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import msgspec

from command_api.planning import Command
from event_store.port import NO_ORIGIN, Origin


class WorkItem(msgspec.Struct, frozen=True, kw_only=True):
    """A command with the request facts the write path needs."""

    command: Command
    user_id: str
    idempotency_key: str | None = None
    request_hash: bytes = b""
    origin: Origin = NO_ORIGIN


class Accepted(msgspec.Struct, frozen=True):
    """The reply to a command that succeeded (or was replayed from its idempotency key)."""

    status: int
    body: bytes
    replayed: bool = False
    position: int = 0  # the position the reply names (read-your-writes token)


Outcome = Accepted | Exception

# Runs a batch of commands and answers each: the port of the write side.
BatchRunner = Callable[[Sequence[WorkItem]], Awaitable[list[Outcome]]]
