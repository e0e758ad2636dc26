"""An identity provider's signing keys (JWKS), kept fresh and never a way to stall the API.

The key set is fetched (off the event loop, with a timeout) when first needed, again every
``max_age`` seconds, and when a token names a key id the set does not hold: the provider may
have rotated. A fetch replaces the whole set, so a key the provider retired stops working.
Fetches are single-flight (every request that needs one waits for the same) and at most one per
``min_interval``: tokens with made-up key ids cannot make the API fetch once each.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import jwt


class KeysUnavailable(Exception):
    """The key set could not be fetched (the provider is down, slow or answers nonsense)."""


def _fetch(url: str, timeout: float) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=timeout) as reply:
        return dict(json.loads(reply.read(1_000_000)))


class JwksKeys:
    """The keys of one JWKS URL, by key id."""

    def __init__(
        self,
        url: str,
        max_age: float = 300.0,
        min_interval: float = 10.0,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        fetch: Callable[[str, float], dict[str, Any]] = _fetch,
    ) -> None:
        self._url = url
        self._max_age = max_age
        self._min_interval = min_interval
        self._timeout = timeout
        self._clock = clock
        self._fetch = fetch
        self._keys: dict[str, Any] = {}
        self._fetched_at = float("-inf")  # the last fetch that worked
        self._tried_at = float("-inf")  # the last fetch, whether it worked or not
        self._fetching: asyncio.Future[None] | None = None
        self.fetches = 0

    def holds(self, kid: str) -> bool:
        """Does the current set still hold ``kid`` (a retired key is gone after a fetch)?"""
        return kid in self._keys

    def stale(self) -> bool:
        """Is the set due for a fetch?"""
        return self._clock() - self._fetched_at >= self._max_age

    async def key(self, kid: str) -> Any | None:
        """The public key named ``kid``, or ``None`` if the provider does not publish it."""
        now = self._clock()
        if (self.stale() or kid not in self._keys) and now - self._tried_at >= self._min_interval:
            await self._refresh()
        elif self._fetching is not None:  # a fetch is under way: its answer is the freshest
            await asyncio.shield(self._fetching)
        return self._keys.get(kid)

    async def _refresh(self) -> None:
        if self._fetching is None:
            self._fetching = asyncio.ensure_future(self._fetch_set())
        try:
            await asyncio.shield(self._fetching)
        except KeysUnavailable:
            if not self._keys:
                raise

    async def _fetch_set(self) -> None:
        self._tried_at = self._clock()
        self.fetches += 1
        try:
            body = await asyncio.to_thread(self._fetch, self._url, self._timeout)
            found = jwt.PyJWKSet.from_dict(body)
        except (OSError, ValueError, jwt.PyJWTError) as exc:
            raise KeysUnavailable(f"the identity provider's keys: {exc}") from None
        finally:
            self._fetching = None
        self._keys = {k.key_id: k.key for k in found.keys if k.key_id}
        self._fetched_at = self._clock()
