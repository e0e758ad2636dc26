"""Who is really asking: the client's address behind trusted proxies, and its address block.

Behind a balancer every connection comes from the balancer. A request whose TCP peer is one of
``TALLY_TRUSTED_PROXIES`` (addresses or networks) is taken to be from the address its
``X-Forwarded-For`` names, walking from the right past every trusted hop; anyone else's
``X-Forwarded-For`` is ignored, so a client cannot pick the address its limits are counted on.
The middleware writes the result into ``scope["client"]`` and records in ``scope["state"]``
whether the request came through a trusted proxy (only then is an incoming trace sampling
decision honoured).

Limits count IPv6 clients by /64: one subscriber usually holds a whole /64, and counting single
addresses would let it take 2^64 slots.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from litestar.types import ASGIApp, Receive, Scope, Send

VIA_TRUSTED_PROXY = "tally_via_trusted_proxy"
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    """The proxies whose ``X-Forwarded-For`` is believed."""

    def __init__(self, spec: str | Iterable[str] = "") -> None:
        items = [i.strip() for i in (spec.split(",") if isinstance(spec, str) else spec)]
        self.everyone = "*" in items  # every peer is a proxy of ours (a test, or a sidecar)
        self.networks: list[_Network] = [
            ipaddress.ip_network(item, strict=False) for item in items if item and item != "*"
        ]

    def __bool__(self) -> bool:
        return self.everyone or bool(self.networks)

    def __contains__(self, address: str) -> bool:
        if self.everyone:
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.networks)

    def client_of(self, peer: str, forwarded_for: str | None) -> tuple[str, bool]:
        """The client's address, and whether it came through a trusted proxy."""
        if peer not in self:
            return peer, False
        if not forwarded_for:
            return peer, True  # a trusted caller itself
        hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
        for hop in reversed(hops):
            if hop not in self or self.everyone:
                return _plain(hop), True
        return _plain(hops[0]) if hops else peer, True


def _plain(address: str) -> str:
    """An address as text, or "unknown" when a proxy passed on something that is none."""
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return "unknown"


def address_block(address: str) -> str:
    """What limits count: an IPv4 address, or the /64 of an IPv6 one."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def client_address_middleware(trusted: TrustedProxies) -> Any:
    """ASGI middleware factory that puts the real client address into ``scope["client"]``."""

    def factory(app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] in ("http", "websocket") and trusted:
                peer = (scope.get("client") or ("", 0))[0]
                forwarded = next(
                    (v.decode("latin-1") for k, v in scope["headers"] if k == b"x-forwarded-for"),
                    None,
                )
                client, via = trusted.client_of(peer, forwarded)
                scope["client"] = (client, 0)
                scope.setdefault("state", {})[VIA_TRUSTED_PROXY] = via
            await app(scope, receive, send)

        return middleware

    return factory


def via_trusted_proxy(scope: Scope) -> bool:
    """Did this request come through a trusted proxy?"""
    return bool(scope.get("state", {}).get(VIA_TRUSTED_PROXY))
