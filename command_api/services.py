"""What the command API needs from the outside world, as the app and its fast lane see it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from command_api.group_commit import Submit
from kernel.auth import TokenVerifier
from kernel.limits import Quota


class RateLimiter(Protocol):
    async def check(self, user_id: str, action: str) -> Quota | None:
        """Count one ``action`` of ``user_id``; ``RateLimited`` over the limit."""
        ...

    async def refund(self, user_id: str, action: str) -> None:
        """Give one back (a replayed request)."""
        ...


@dataclass(frozen=True)
class CommandServices:
    """The ports the command API runs on."""

    submit: Submit
    rate_limiter: RateLimiter
    verifier: TokenVerifier
    # name -> a check that raises (or times out) when that dependency is down
    readiness: Mapping[str, Callable[[], Awaitable[object]]] = field(default_factory=dict)
