"""Rate-limit tiers in front of an API, counted in memory: per address block (an IPv4 address
or an IPv6 /64, the real client behind trusted proxies), per address and endpoint, and global.

A request passes every tier or is answered at once: 429 with ``Retry-After`` when one client
is over its share, 503 with ``Retry-After`` when the process as a whole is (the global tier).
Passing requests carry ``RateLimit-*`` headers of the tier closest to its limit (the user tier
of writes adds its own). No store is asked: a flood of anonymous reads is refused before it
costs Redis or the search engine anything, and cannot slow the write limits down. Loopback
clients (this host's own tools and load tests, or a balancer not configured as trusted) have
no per-address share; the global tier still counts them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple

import msgspec
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from kernel.client_address import address_block
from kernel.limits import Limit, LocalBuckets, Quota

EXEMPT = re.compile(r"^/(health|ready|metrics|schema)(/|$)")


class Tier(NamedTuple):
    """One limit: ``key(block, path)`` names the bucket (``None``: the tier does not apply)."""

    name: str
    limit: Limit
    key: Callable[[str, str], str | None]


def _loopback(block: str) -> bool:
    return block.startswith("127.") or block in ("::1", "localhost")


def per_address(limit: Limit) -> Tier:
    return Tier("address", limit, lambda block, _: None if _loopback(block) else block)


def per_endpoint(name: str, pattern: str, limit: Limit) -> Tier:
    """``limit`` per address block for the paths matching ``pattern``."""
    match = re.compile(pattern).search

    def key(block: str, path: str) -> str | None:
        return f"{block}|{name}" if match(path) and not _loopback(block) else None

    return Tier(name, limit, key)


def global_tier(limit: Limit) -> Tier:
    return Tier("global", limit, lambda _, __: "*")


def _refusal(tier: str, quota: Quota, path: str) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    status = 503 if tier == "global" else 429
    detail = (
        "this server is answering as many requests as it may; retry shortly"
        if status == 503
        else f"too many requests from this address ({tier} limit); retry after"
        f" {quota.retry_after} s"
    )
    body = msgspec.json.encode(
        {
            "type": "urn:tally:problem:" + ("overloaded" if status == 503 else "rate-limited"),
            "title": "Service unavailable" if status == 503 else "Too many requests",
            "status": status,
            "detail": detail,
            "instance": path,
        }
    )
    headers = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", b"%d" % len(body)),
        (b"retry-after", b"%d" % quota.retry_after),
        *((k.lower().encode(), v.encode()) for k, v in quota.headers().items()),
    ]
    return status, body, headers


def limit_tiers(app: ASGIApp, tiers: list[Tier], buckets: LocalBuckets | None = None) -> ASGIApp:
    """``app`` behind ``tiers`` (tiers with a limit of 0 are off)."""
    active = [t for t in tiers if t.limit.limit > 0]
    store = buckets or LocalBuckets()
    if not active:
        return app

    async def limited(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != ScopeType.HTTP or EXEMPT.match(path):
            await app(scope, receive, send)
            return
        block = address_block((scope.get("client") or ("unknown", 0))[0])
        tightest: Quota | None = None
        for tier in active:
            key = tier.key(block, path)
            if key is None:
                continue
            quota = store.take(f"{tier.name}|{key}", tier.limit)
            if quota.retry_after:
                status, body, headers = _refusal(tier.name, quota, path)
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": body, "more_body": False})
                return
            if (
                tightest is None
                or quota.remaining * tightest.limit < tightest.remaining * quota.limit
            ):
                tightest = quota
        if tightest is None:
            await app(scope, receive, send)
            return
        extra = [(k.lower().encode(), v.encode()) for k, v in tightest.headers().items()]

        async def with_quota(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [
                    *message.get("headers", []),
                    *(h for h in extra if h[0] not in names),  # the user tier's own win
                ]
            await send(message)

        await app(scope, receive, with_quota)

    return limited
