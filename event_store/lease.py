"""Relay leadership: a lease in PostgreSQL with a fencing token.

A session advisory lock lasts as long as its connection, and a paused leader keeps its
connection open: the standby would wait forever. A lease instead expires unless renewed, so a
leader that stops making progress (paused, partitioned, stuck in a call) loses it after
``seconds``, and a standby takes it with a higher ``token``. The advisory lock stays as a fast
path: a standby that gets it knows the leader's session is gone (a crash, a kill), and takes
the lease at once instead of waiting for it to expire.

A leader paused inside its fencing transaction holds the lease row's lock: the standby skips a
locked row instead of waiting on it (``SKIP LOCKED``), and the relay's sessions end an idle
transaction after a few seconds (``idle_in_transaction_session_timeout``), which lets it go.
Times are ``clock_timestamp()``, not the transaction's start.

Two checks keep an old leader harmless once it wakes up:

- before acting, it looks at its own clock (``LeaseTimer``): past the safe part of the lease it
  renews first, and stops if that fails;
- every write it makes (deleting outbox rows, moving the partition chain) runs in a transaction
  that renews the lease for its token (``renew``): with a newer token in place that transaction
  changes nothing and the relay steps down. Kafka may see its duplicates; projectors skip them
  by position.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from typing import Any

from psycopg import AsyncConnection

_ACQUIRE = """
UPDATE relay_lease
SET holder = %(me)s, token = token + 1,
    expires_at = clock_timestamp() + %(ttl)s * interval '1 second'
WHERE id IN (
    SELECT id FROM relay_lease
    WHERE expires_at <= clock_timestamp() OR holder = %(me)s OR %(force)s
    FOR UPDATE SKIP LOCKED
)
RETURNING token
"""
RELAY_LOCK = 0x7A11_0001  # session advisory lock: held by the leader's process while it runs
_RENEW = """
UPDATE relay_lease SET expires_at = clock_timestamp() + %(ttl)s * interval '1 second'
WHERE token = %(token)s AND holder = %(me)s AND expires_at > clock_timestamp()
RETURNING token
"""
_RELEASE = """
UPDATE relay_lease SET expires_at = '-infinity' WHERE token = %(token)s AND holder = %(me)s
"""


def holder_name() -> str:
    """Who this process is, in the lease (host, pid, and a nonce for pid reuse)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class LeaseTimer:
    """When a lease taken at a moment must be renewed, and until when it may be acted on.

    Pure: times are ``time.monotonic()`` readings passed in. The safe part of the lease ends
    ``margin`` before it expires, so an action started then still ends before a standby can
    take over.
    """

    def __init__(self, seconds: float, margin: float | None = None) -> None:
        self.seconds = seconds
        self.margin = seconds / 4 if margin is None else margin
        self.renewed_at: float | None = None

    def renewing(self, now: float) -> None:
        """A renewal is being sent at ``now`` (counted from before it is sent)."""
        self.renewed_at = now

    def lost(self) -> None:
        self.renewed_at = None

    def may_act(self, now: float) -> bool:
        """Still inside the safe part of the lease?"""
        return self.renewed_at is not None and now - self.renewed_at < self.seconds - self.margin

    def should_renew(self, now: float) -> bool:
        """Time to renew: every quarter of the lease, and whenever it may not act."""
        return self.renewed_at is None or now - self.renewed_at >= self.seconds / 4


class RelayLease:
    """The relay's lease, held by ``holder`` for ``seconds`` at a time."""

    def __init__(self, seconds: float, holder: str | None = None) -> None:
        self.holder = holder or holder_name()
        self.timer = LeaseTimer(seconds)
        self.token: int | None = None

    def _params(self, force: bool = False) -> dict[str, Any]:
        return {"me": self.holder, "ttl": self.timer.seconds, "token": self.token, "force": force}

    async def acquire(self, conn: AsyncConnection[Any], force: bool = False) -> bool:
        """Take the lease if it is free (expired or never held), or at once with ``force`` (the
        caller holds the advisory lock: the last leader's session is gone); True when held."""
        self.timer.renewing(time.monotonic())
        row = await (await conn.execute(_ACQUIRE, self._params(force))).fetchone()
        if row is None:
            self.timer.lost()
            self.token = None
            return False
        self.token = int(row[0])
        return True

    async def renew(self, conn: AsyncConnection[Any]) -> bool:
        """Extend the lease for this token; False (and no longer leader) when it was lost.

        Call it inside the transaction whose writes it fences.
        """
        if self.token is None:
            return False
        started = time.monotonic()
        row = await (await conn.execute(_RENEW, self._params())).fetchone()
        if row is None:
            self.timer.lost()
            self.token = None
            return False
        self.timer.renewing(started)
        return True

    async def release(self, conn: AsyncConnection[Any]) -> None:
        """Give the lease up now (a clean stop), so a standby need not wait for it to expire."""
        if self.token is not None:
            await conn.execute(_RELEASE, self._params())
        self.token = None
        self.timer.lost()

    def may_act(self) -> bool:
        """Held, and inside its safe part by this process's clock."""
        return self.token is not None and self.timer.may_act(time.monotonic())

    def should_renew(self) -> bool:
        return self.timer.should_renew(time.monotonic())
