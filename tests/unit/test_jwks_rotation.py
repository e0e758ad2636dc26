"""An identity provider's keys rotate: new ones are fetched, retired ones stop working, and made-up
key ids cost one bounded fetch per interval, not one each."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from kernel.auth import AuthConfig, NotAuthenticated, TokenVerifier
from kernel.jwks import JwksKeys


def _key() -> Any:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _jwk(key: Any, kid: str) -> dict[str, Any]:
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    return public | {"kid": kid, "use": "sig", "alg": "RS256"}


class Provider:
    """A JWKS endpoint whose published keys the test changes; counts fetches."""

    def __init__(self, **keys: Any) -> None:
        self.keys = keys
        self.fetches = 0
        self.delay = 0.0

    def fetch(self, url: str, timeout: float) -> dict[str, Any]:
        self.fetches += 1
        time.sleep(self.delay)
        return {"keys": [_jwk(k, kid) for kid, k in self.keys.items()]}


def token(key: Any, kid: str, user: str = "alice") -> str:
    claims = {"sub": user, "exp": time.time() + 600, "iss": "idp", "aud": "tally"}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


def verifier(provider: Provider, now: list[float]) -> TokenVerifier:
    config = AuthConfig(
        algorithm="RS256", jwks_url="http://idp/keys", issuer="idp", audience="tally"
    )
    checker = TokenVerifier(config=config)
    checker._jwks = JwksKeys(
        "http://idp/keys", max_age=300, min_interval=10, clock=lambda: now[0], fetch=provider.fetch
    )
    return checker


async def test_a_rotated_key_is_fetched_and_a_retired_one_stops_working_cached_tokens_too() -> None:
    old, new = _key(), _key()
    provider, now = Provider(k1=old), [0.0]
    checker = verifier(provider, now)
    signed_old = f"Bearer {token(old, 'k1')}"
    assert await checker.user_of(signed_old) == "alice"
    provider.keys = {"k1": old, "k2": new}  # the provider rotates in a new key
    now[0] = 20.0
    assert await checker.user_of(f"Bearer {token(new, 'k2', 'bob')}") == "bob"  # fetched on sight
    provider.keys = {"k2": new}  # ... and retires the old one
    now[0] = 400.0  # past the set's max age: the next check fetches it again
    with pytest.raises(NotAuthenticated, match="unknown signing key"):
        await checker.user_of(signed_old)  # even though its token was cached as good


async def test_made_up_key_ids_share_one_fetch_per_interval() -> None:
    key = _key()
    provider, now = Provider(k1=key), [0.0]
    checker = verifier(provider, now)
    assert await checker.user_of(f"Bearer {token(key, 'k1')}") == "alice"
    provider.delay = 0.2  # a slow provider
    now[0] = 15.0
    forged = [f"Bearer {token(key, f'random-{n}')}" for n in range(200)]
    results = await asyncio.gather(*(checker.user_of(t) for t in forged), return_exceptions=True)
    assert all(isinstance(r, NotAuthenticated) for r in results)
    assert provider.fetches == 2  # the first, and one for all 200 made-up ids
    now[0] = 16.0
    with pytest.raises(NotAuthenticated):
        await checker.user_of(f"Bearer {token(key, 'random-again')}")
    assert provider.fetches == 2  # within the interval: no fetch at all
