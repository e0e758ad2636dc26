"""Bearer JWT authentication: the user is ``sub``.

Two ways to check signatures:

- a shared secret (HS256/384/512), at least 32 bytes;
- an identity provider's public keys (RS256, ES256, ...) from its JWKS URL (``kernel.jwks``):
  refetched every few minutes and when a token names a key id not seen yet, at most once per
  interval; a key the provider retired stops working, cached tokens signed with it included.

``iss`` and ``aud`` are enforced when configured, expiry and not-before with a small leeway for
clock skew, on one injectable clock. Good tokens are cached until they expire, so the hot path
costs a dictionary lookup; a token not seen yet in the plain HS256 shape is checked by
``kernel.plain_jwt`` at a tenth of PyJWT's cost, anything else by PyJWT.
``auth_config_problems`` says what is wrong with a configuration outside local runs: the
well-known development secret, a short secret, no key at all, no issuer or audience.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import jwt
import msgspec

from kernel.jwks import JwksKeys, KeysUnavailable
from kernel.plain_jwt import PlainChecker

DEV_SECRET = "tally-local-dev-secret-change-me"
MIN_SECRET_BYTES = 32
MAX_USER_ID_LENGTH = 128
_SYMMETRIC = ("HS256", "HS384", "HS512")


class NotAuthenticated(Exception):
    """No usable bearer token: missing, malformed, badly signed, expired or not for us."""


def valid_subject(subject: object) -> bool:
    """Is ``subject`` a user id every store takes as it is: a string of 1 to 128 printable
    characters (no control, format or private-use characters, no lone surrogates), valid
    UTF-8? Checked once, at the token edge, whichever path checked the signature."""
    if not isinstance(subject, str) or not 0 < len(subject) <= MAX_USER_ID_LENGTH:
        return False
    # isprintable() is false for every "Other" (Cc, Cf, Cs, Co, Cn) and separator but space;
    # lone surrogates are Cs, so what passes also encodes as UTF-8.
    return subject.isprintable()


class AuthConfig(msgspec.Struct, frozen=True, kw_only=True):
    """How tokens are checked."""

    secret: str = DEV_SECRET
    algorithm: str = "HS256"
    jwks_url: str = ""  # set: asymmetric keys from the identity provider
    issuer: str = ""
    audience: str = ""
    leeway_seconds: float = 30.0


def auth_config_problems(config: AuthConfig, local: bool) -> list[str]:
    """What makes ``config`` unfit to run with (nothing is unfit locally but a bad algorithm)."""
    problems = []
    if config.jwks_url:
        if config.algorithm in _SYMMETRIC:
            problems.append("TALLY_JWT_ALGORITHM must be asymmetric (RS256, ES256...) with a JWKS")
    elif config.algorithm not in _SYMMETRIC:
        problems.append(f"TALLY_JWT_ALGORITHM {config.algorithm} needs TALLY_JWT_JWKS_URL")
    elif not local:
        if config.secret == DEV_SECRET:
            problems.append("TALLY_JWT_SECRET is the public development secret")
        elif len(config.secret.encode()) < MIN_SECRET_BYTES:
            problems.append(f"TALLY_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes")
    if not local:
        # Without them, a token an identity provider issued for another app is taken as ours.
        if not config.issuer:
            problems.append("TALLY_JWT_ISSUER is required (the iss tokens must carry)")
        if not config.audience:
            problems.append("TALLY_JWT_AUDIENCE is required (the aud tokens must carry)")
    return problems


def mint_token(
    user_id: str,
    secret: str,
    ttl_seconds: int,
    algorithm: str = "HS256",
    issuer: str = "",
    audience: str = "",
) -> str:
    """A token for ``user_id`` signed with ``secret``, expiring after ``ttl_seconds``."""
    now = int(time.time())
    claims: dict[str, Any] = {"sub": user_id, "iat": now, "exp": now + ttl_seconds}
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    return jwt.encode(claims, secret, algorithm=algorithm)


class TokenVerifier:
    """Checks bearer tokens; remembers good ones until they expire."""

    def __init__(
        self,
        secret: str = DEV_SECRET,
        algorithm: str = "HS256",
        cache_size: int = 50_000,
        clock: Callable[[], float] = time.time,
        config: AuthConfig | None = None,
    ) -> None:
        self.config = config or AuthConfig(secret=secret, algorithm=algorithm)
        self._cache: dict[str, tuple[str, float, str]] = {}  # token -> user, expiry, kid
        self._cache_size = cache_size
        self._clock = clock  # one clock for the cache and every time claim
        self._jwks = JwksKeys(self.config.jwks_url) if self.config.jwks_url else None
        self._plain = _plain_checker(self.config) if self._jwks is None else None

    async def user_of(self, authorization: str | None) -> str:
        """The user id in an ``Authorization: Bearer`` header, or ``NotAuthenticated``."""
        token = _bearer(authorization)
        cached = self._cache.get(token)
        if cached is not None and cached[1] > self._clock() and await self._key_kept(cached[2]):
            return cached[0]
        kid, key = ("", self.config.secret) if self._jwks is None else await self._public_key(token)
        user_id, expires = self._verify(token, key)
        if len(self._cache) >= self._cache_size:
            self._cache.clear()
        self._cache[token] = (user_id, expires, kid)
        return user_id

    async def _key_kept(self, kid: str) -> bool:
        """Is the key a cached token was checked with still published (JWKS)?"""
        if self._jwks is None:
            return True
        if self._jwks.stale():
            with contextlib.suppress(KeysUnavailable):
                await self._jwks.key(kid)
        return self._jwks.holds(kid)

    async def _public_key(self, token: str) -> tuple[str, Any]:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.InvalidTokenError as exc:
            raise NotAuthenticated(f"invalid token: {exc}") from None
        if not isinstance(kid, str) or not 0 < len(kid) <= 200:
            raise NotAuthenticated("invalid token: no usable 'kid' in its header")
        assert self._jwks is not None
        try:
            key = await self._jwks.key(kid)
        except KeysUnavailable as exc:
            raise NotAuthenticated(
                f"invalid token: cannot check its signature now ({exc})"
            ) from None
        if key is None:
            raise NotAuthenticated("invalid token: unknown signing key")
        return kid, key

    def _verify(self, token: str, key: Any) -> tuple[str, float]:
        config = self.config
        claims = self._plain.plain_claims(token) if self._plain is not None else None
        try:
            claims = claims or jwt.decode(
                token,
                key,
                algorithms=[config.algorithm],
                audience=config.audience or None,
                issuer=config.issuer or None,
                options={
                    "require": ["sub", "exp"],
                    "verify_exp": False,  # checked below, on our clock
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_aud": bool(config.audience),
                    "verify_iss": bool(config.issuer),
                },
            )
        except jwt.InvalidTokenError as exc:
            raise NotAuthenticated(f"invalid token: {exc}") from None
        now, leeway = self._clock(), config.leeway_seconds
        expires = _number(claims, "exp")
        if expires is None or expires + leeway <= now:
            raise NotAuthenticated("token has expired")
        not_before = _number(claims, "nbf")
        if not_before is not None and not_before - leeway > now:
            raise NotAuthenticated("token is not valid yet")
        user_id = claims["sub"]
        if not valid_subject(user_id):
            raise NotAuthenticated("token 'sub' must be a user id of 1 to 128 printable characters")
        return user_id, expires + leeway


def _plain_checker(config: AuthConfig) -> PlainChecker | None:
    """The shortcut for plain tokens, for a secret PyJWT itself takes (it refuses, say, a PEM
    public key as an HMAC secret)."""
    if config.algorithm not in _SYMMETRIC:
        return None
    try:
        return PlainChecker(config.secret, config.algorithm, config.issuer, config.audience)
    except jwt.InvalidKeyError:
        return None


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise NotAuthenticated("missing Authorization header")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise NotAuthenticated("Authorization must be 'Bearer <token>'")
    if len(token) > 8192:
        raise NotAuthenticated("invalid token: too long")
    return token


def _number(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise NotAuthenticated(f"invalid token: '{name}' must be a number")
    return float(value)
