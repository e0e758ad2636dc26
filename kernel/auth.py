"""Bearer JWT authentication (HS256 by default; the user is ``sub``)."""

from __future__ import annotations

import time
from collections.abc import Callable

import jwt


class NotAuthenticated(Exception):
    """No usable bearer token: missing, malformed, badly signed or expired."""


MAX_USER_ID_LENGTH = 128


def mint_token(user_id: str, secret: str, ttl_seconds: int, algorithm: str = "HS256") -> str:
    """A signed token for ``user_id`` that expires after ``ttl_seconds``."""
    now = int(time.time())
    return jwt.encode(
        {"sub": user_id, "iat": now, "exp": now + ttl_seconds}, secret, algorithm=algorithm
    )


class TokenVerifier:
    """Checks tokens; remembers good ones (until they expire) to keep the hot path cheap."""

    def __init__(
        self,
        secret: str,
        algorithm: str = "HS256",
        cache_size: int = 50_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._secret = secret
        self._algorithms = [algorithm]
        self._cache: dict[str, tuple[str, float]] = {}
        self._cache_size = cache_size
        self._clock = clock  # one clock for the cache and the expiry check

    def user_of(self, authorization: str | None) -> str:
        """The user id in an ``Authorization: Bearer`` header, or ``NotAuthenticated``."""
        if not authorization:
            raise NotAuthenticated("missing Authorization header")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise NotAuthenticated("Authorization must be 'Bearer <token>'")
        cached = self._cache.get(token)
        if cached is not None and cached[1] > self._clock():
            return cached[0]
        user_id, expires = self._verify(token)
        if len(self._cache) >= self._cache_size:
            self._cache.clear()
        self._cache[token] = (user_id, expires)
        return user_id

    def _verify(self, token: str) -> tuple[str, float]:
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=self._algorithms,
                options={"require": ["sub", "exp"], "verify_exp": False},
            )
        except jwt.InvalidTokenError as exc:
            raise NotAuthenticated(f"invalid token: {exc}") from None
        expires = claims["exp"]
        if not isinstance(expires, int | float) or isinstance(expires, bool):
            raise NotAuthenticated("invalid token: 'exp' must be a number")
        if expires <= self._clock():
            raise NotAuthenticated("token has expired")
        user_id = claims["sub"]
        if not isinstance(user_id, str) or not 0 < len(user_id) <= MAX_USER_ID_LENGTH:
            raise NotAuthenticated("token 'sub' must be a user id of 1 to 128 characters")
        return user_id, float(expires)
