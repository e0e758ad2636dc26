"""The client's address is believed from X-Forwarded-For only behind a trusted proxy, and
limits count IPv6 clients by /64."""

from __future__ import annotations

import asyncio
from typing import Any

from kernel.client_address import (
    TrustedProxies,
    address_block,
    client_address_middleware,
    via_trusted_proxy,
)

PROXIES = TrustedProxies("10.0.0.0/8, 127.0.0.1")


def test_a_forwarded_address_counts_only_from_a_trusted_proxy() -> None:
    assert PROXIES.client_of("10.1.2.3", "203.0.113.9") == ("203.0.113.9", True)
    assert PROXIES.client_of("198.51.100.7", "203.0.113.9") == ("198.51.100.7", False)  # forged
    # The rightmost address that is not a proxy of ours: a client cannot prepend its choice.
    assert PROXIES.client_of("10.1.2.3", "6.6.6.6, 203.0.113.9, 10.9.9.9") == (
        "203.0.113.9",
        True,
    )
    assert PROXIES.client_of("10.1.2.3", "not-an-address") == ("unknown", True)
    assert PROXIES.client_of("127.0.0.1", None) == ("127.0.0.1", True)
    assert TrustedProxies("").client_of("127.0.0.1", "1.2.3.4") == ("127.0.0.1", False)


def test_ipv6_clients_are_counted_by_their_64_block() -> None:
    assert address_block("2001:db8:1:2:aaaa::1") == address_block("2001:db8:1:2:ffff::9")
    assert address_block("2001:db8:1:2::1") != address_block("2001:db8:1:3::1")
    assert address_block("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert address_block("::ffff:192.0.2.1") == "192.0.2.1"
    assert address_block("192.0.2.1") == "192.0.2.1"


def test_the_middleware_puts_the_real_client_into_the_scope() -> None:
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen["client"] = scope["client"]
        seen["via"] = via_trusted_proxy(scope)

    wrapped = client_address_middleware(PROXIES)(app)
    scope = {
        "type": "http",
        "client": ("10.0.0.5", 5555),
        "headers": [(b"x-forwarded-for", b"203.0.113.9")],
    }
    asyncio.run(wrapped(scope, None, None))
    assert seen == {"client": ("203.0.113.9", 0), "via": True}
    direct = {
        "type": "http",
        "client": ("203.0.113.50", 1),
        "headers": [(b"x-forwarded-for", b"1.1.1.1")],
    }
    asyncio.run(wrapped(direct, None, None))
    assert seen == {"client": ("203.0.113.50", 0), "via": False}
