"""How long vote documents are kept: ``TALLY_VOTES_RETENTION_DAYS`` (0: for ever).

The votes index is one index per version behind the ``tally-votes`` alias, not a data stream
or rolled-over indices: a document's id is its event id, and only a single index makes a
redelivered or replayed event overwrite its document instead of adding a second one in the
newest backing index (which would double count). So ageing out is done here: the projection
does not write votes older than the retention (``within``), and an hourly pass deletes the
documents that aged out since (``delete_by_query`` on ``@timestamp``). The log keeps every
event; a longer retention and a replay bring old votes back.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta

import structlog
from elasticsearch import AsyncElasticsearch
from prometheus_client import Counter

from projectors.store_errors import classify
from schemas.envelope import Envelope

log = structlog.get_logger()

EXPIRED = Counter("tally_votes_expired_total", "Vote documents deleted for being too old")


def within(days: int, envelope: Envelope, now: datetime | None = None) -> bool:
    """Is the event recent enough to keep (always, when ``days`` is 0)?"""
    if days <= 0:
        return True
    return envelope.occurred_at >= (now or datetime.now(UTC)) - timedelta(days=days)


class VotesRetention:
    """Deletes the vote documents older than ``days``, every ``interval`` seconds."""

    def __init__(
        self, es: AsyncElasticsearch, alias: str, days: int, interval: float = 3600.0
    ) -> None:
        self._es = es
        self._alias = alias
        self._days = days
        self._interval = interval

    async def expire_once(self) -> int:
        """Delete what aged out; return how many documents went."""
        reply = await self._es.delete_by_query(
            index=self._alias,
            query={"range": {"@timestamp": {"lt": f"now-{self._days}d"}}},
            conflicts="proceed",  # a document re-written meanwhile is left for the next pass
            refresh=True,
        )
        deleted = int(reply.get("deleted", 0))
        EXPIRED.inc(deleted)
        if deleted:
            log.info("votes_expired", deleted=deleted, retention_days=self._days)
        return deleted

    async def run(self, stop: asyncio.Event) -> None:
        """Expire now and then every interval until ``stop``; outages wait for the next pass."""
        if self._days <= 0:
            return
        while not stop.is_set():
            try:
                await self.expire_once()
            except Exception as exc:
                if classify(exc) == "bug":
                    raise
                log.warning("votes_expiry_failed", error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval)
