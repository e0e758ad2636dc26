"""Bearer tokens: what is accepted and what is refused, on an injected clock."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import jwt
import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from kernel.auth import (
    DEV_SECRET,
    AuthConfig,
    NotAuthenticated,
    TokenVerifier,
    auth_config_problems,
    mint_token,
)

SECRET = "a-test-secret-that-is-long-enough-for-hs256"
NOW = 1_800_000_000.0


def bearer(token: str) -> str:
    return f"Bearer {token}"


def verifier(**config: Any) -> TokenVerifier:
    return TokenVerifier(config=AuthConfig(secret=SECRET, **config), clock=lambda: NOW)


def token(claims: dict[str, Any], key: Any = SECRET, algorithm: str = "HS256", **kw: Any) -> str:
    return bearer(jwt.encode({"sub": "alice", "exp": NOW + 60} | claims, key, algorithm, **kw))


async def test_a_minted_token_names_its_user() -> None:
    assert await TokenVerifier(SECRET).user_of(bearer(mint_token("alice", SECRET, 60))) == "alice"


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "missing Authorization"),
        ("Basic abc", "Bearer <token>"),
        (bearer("not-a-jwt"), "invalid token"),
        (token({}, key="another-test-secret-that-is-long-enough-too"), "Signature verification"),
        (token({"exp": NOW - 31}), "expired"),
        (token({"nbf": NOW + 31}), "not valid yet"),
        (token({"exp": "tomorrow"}), "'exp' must be a number"),
        (bearer(jwt.encode({"exp": NOW + 60}, SECRET)), "sub"),
        (bearer(jwt.encode({"sub": "alice"}, SECRET)), "exp"),
        (token({"sub": "x" * 200}), "1 to 128"),
        (token({"sub": 42}), "Subject must be a string"),
        (bearer("a." * 5000), "too long"),
    ],
)
async def test_bad_tokens_are_refused_with_a_reason(header: str | None, reason: str) -> None:
    with pytest.raises(NotAuthenticated, match=reason):
        await verifier().user_of(header)


async def test_a_little_clock_skew_is_forgiven() -> None:
    skewed = token({"exp": NOW - 10, "nbf": NOW + 10})
    assert await verifier(leeway_seconds=30).user_of(skewed) == "alice"


async def test_alg_none_and_algorithm_confusion_are_refused() -> None:
    unsigned = bearer(jwt.encode({"sub": "alice", "exp": NOW + 60}, None, algorithm="none"))
    with pytest.raises(NotAuthenticated, match="alg value is not allowed"):
        await verifier().user_of(unsigned)
    with pytest.raises(NotAuthenticated, match="alg value is not allowed"):
        await verifier().user_of(token({}, algorithm="HS512"))


async def test_issuer_and_audience_are_enforced_when_configured() -> None:
    strict = verifier(issuer="https://id.example", audience="tally")
    good = token({"iss": "https://id.example", "aud": "tally"})
    assert await strict.user_of(good) == "alice"
    for claims, reason in [
        ({"aud": "tally"}, "iss"),
        ({"iss": "https://evil.example", "aud": "tally"}, "Invalid issuer"),
        ({"iss": "https://id.example", "aud": "other"}, "Audience"),
    ]:
        with pytest.raises(NotAuthenticated, match=reason):
            await strict.user_of(token(claims))


async def test_a_cached_token_is_refused_once_it_expires() -> None:
    now = [NOW]
    checker = TokenVerifier(
        config=AuthConfig(secret=SECRET, leeway_seconds=0), clock=lambda: now[0]
    )
    good = token({"exp": NOW + 60})
    assert await checker.user_of(good) == "alice"
    now[0] += 59
    assert await checker.user_of(good) == "alice"  # from the cache
    now[0] += 1
    with pytest.raises(NotAuthenticated, match="expired"):
        await checker.user_of(good)


def test_outside_local_runs_the_development_or_a_short_secret_is_refused() -> None:
    assert auth_config_problems(AuthConfig(secret=DEV_SECRET), local=True) == []
    assert "development secret" in auth_config_problems(AuthConfig(secret=DEV_SECRET), False)[0]
    assert "at least 32 bytes" in auth_config_problems(AuthConfig(secret="short"), False)[0]
    strict = AuthConfig(secret=SECRET, issuer="https://id.example", audience="tally")
    assert auth_config_problems(strict, local=False) == []
    assert "JWKS" in auth_config_problems(AuthConfig(algorithm="RS256"), False)[0]


def test_outside_local_runs_tokens_must_name_their_issuer_and_audience() -> None:
    problems = auth_config_problems(AuthConfig(secret=SECRET), local=False)
    assert any("TALLY_JWT_ISSUER is required" in p for p in problems)
    assert any("TALLY_JWT_AUDIENCE is required" in p for p in problems)
    assert auth_config_problems(AuthConfig(secret=SECRET), local=True) == []


@pytest.fixture
def identity_provider() -> Iterator[tuple[str, Any]]:
    """A JWKS endpoint on localhost with one RSA key, ``kid`` "k1"; (url, private key)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    body = json.dumps({"keys": [public | {"kid": "k1", "use": "sig", "alg": "RS256"}]}).encode()

    class Keys(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Keys)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json", key
    server.shutdown()


async def test_tokens_of_an_identity_provider_are_checked_with_its_published_keys(
    identity_provider: tuple[str, Any],
) -> None:
    url, key = identity_provider
    checker = TokenVerifier(
        config=AuthConfig(algorithm="RS256", jwks_url=url, audience="tally"), clock=time.time
    )
    claims = {"exp": time.time() + 60, "aud": "tally"}
    signed = token(claims, key=key, algorithm="RS256", headers={"kid": "k1"})
    assert await checker.user_of(signed) == "alice"
    unknown_key = token(claims, key=key, algorithm="RS256", headers={"kid": "k2"})
    with pytest.raises(NotAuthenticated, match="unknown signing key"):
        await checker.user_of(unknown_key)
    forged = token(claims, key=SECRET, algorithm="HS256", headers={"kid": "k1"})
    with pytest.raises(NotAuthenticated, match="alg value is not allowed"):
        await checker.user_of(forged)


def test_outside_local_runs_a_cursor_secret_of_its_own_is_required() -> None:
    from kernel.settings import Settings, SettingsError
    from tally.bootstrap import check_auth_settings

    strict = Settings(
        env="production", jwt_secret=SECRET, jwt_issuer="https://id.example", jwt_audience="tally"
    )
    with pytest.raises(SettingsError, match="TALLY_CURSOR_SECRET"):
        check_auth_settings(strict)
    check_auth_settings(msgspec.structs.replace(strict, cursor_secret="c" * 32))
    check_auth_settings(Settings(env="local"))  # local runs derive one
