"""Bearer tokens: what is accepted and what is refused."""

import time

import jwt
import pytest

from kernel.auth import NotAuthenticated, TokenVerifier, mint_token

SECRET = "a-test-secret-that-is-long-enough-for-hs256"


def bearer(token: str) -> str:
    return f"Bearer {token}"


def test_a_minted_token_names_its_user() -> None:
    assert TokenVerifier(SECRET).user_of(bearer(mint_token("alice", SECRET, 60))) == "alice"


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "missing Authorization"),
        ("Basic abc", "Bearer <token>"),
        (bearer("not-a-jwt"), "invalid token"),
        (
            bearer(mint_token("alice", "another-test-secret-that-is-long-enough-too", 60)),
            "Signature verification failed",
        ),
        (bearer(mint_token("alice", SECRET, -10)), "expired"),
        (bearer(jwt.encode({"exp": int(time.time()) + 3600}, SECRET)), "sub"),
        (bearer(jwt.encode({"sub": "alice"}, SECRET)), "exp"),
        (bearer(jwt.encode({"sub": "x" * 200, "exp": time.time() + 3600}, SECRET)), "1 to 128"),
    ],
)
def test_bad_tokens_are_refused_with_a_reason(header: str | None, reason: str) -> None:
    with pytest.raises(NotAuthenticated, match=reason):
        TokenVerifier(SECRET).user_of(header)


def test_alg_none_is_refused() -> None:
    unsigned = jwt.encode({"sub": "alice", "exp": int(time.time()) + 3600}, None, algorithm="none")
    with pytest.raises(NotAuthenticated, match="alg value is not allowed"):
        TokenVerifier(SECRET).user_of(bearer(unsigned))


def test_a_cached_token_is_refused_once_it_expires() -> None:
    now = [1_000_000.0]
    verifier = TokenVerifier(SECRET, clock=lambda: now[0])
    token = jwt.encode({"sub": "alice", "exp": now[0] + 60}, SECRET)
    assert verifier.user_of(bearer(token)) == "alice"
    now[0] += 59
    assert verifier.user_of(bearer(token)) == "alice"  # from the cache
    now[0] += 1
    with pytest.raises(NotAuthenticated, match="expired"):
        verifier.user_of(bearer(token))
