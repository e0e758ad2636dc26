"""The plain-token shortcut never decides differently from PyJWT, and does take plain tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import jwt
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from kernel.auth import AuthConfig, NotAuthenticated, TokenVerifier
from kernel.plain_jwt import PlainChecker

SECRET = "a-secret-long-enough-for-hs512-" * 3
NOW = 1_800_000_000.0
_HASH = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _token(header: Any, claims: Any, sign_alg: str, key: str, mangle: str) -> str:
    head = _b64(json.dumps(header).encode())
    body = _b64(json.dumps(claims).encode())
    signature = hmac.digest(key.encode(), f"{head}.{body}".encode(), _HASH[sign_alg])
    token = f"{head}.{body}.{_b64(signature)}"
    if mangle == "flip":  # one character of the signature changed
        token = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    elif mangle == "padded":
        token += "=="
    elif mangle == "junk":
        token = token.replace(".", ".!", 1)
    elif mangle == "segments":
        token += ".x"
    return token


_values = st.one_of(
    st.none(),
    st.sampled_from(["alice", "", "tally", "other"]),
    st.integers(-1, 2**40),
    st.floats(allow_nan=False),
    st.lists(st.sampled_from(["x", "tally"])),
)
# A good token, then a few of these done to it: each alone may or may not spoil it.
_FAULTS = [
    *(f"header {k}" for k in ("alg", "typ", "kid", "crit", "b64", "not an object")),
    *(f"drop {k}" for k in ("typ", "sub", "exp", "iss", "aud")),
    *(f"claim {k}" for k in ("sub", "exp", "nbf", "iss", "aud", "jti", "extra")),
    "claims not an object",
    "wrong key",
    "other algorithm",
    *(f"mangle {m}" for m in ("flip", "padded", "junk", "segments")),
]


def _spoiled(faults: list[str], value: Any, algorithm: str, issuer: str, audience: str) -> str:
    header: Any = {"alg": algorithm, "typ": "JWT"}
    claims: Any = {"sub": "alice", "exp": NOW + 600}
    claims |= {"iss": issuer} if issuer else {}
    claims |= {"aud": [audience, "x"]} if audience else {}
    key, sign_alg, mangle = SECRET, algorithm, ""
    for fault in faults:
        kind, _, name = fault.partition(" ")
        target = header if kind == "header" or fault == "drop typ" else claims
        if kind in ("header", "drop", "claim") and not isinstance(target, dict):
            continue  # already not an object
        if fault == "header alg":
            header["alg"] = value if isinstance(value, str) else "none"
        elif fault == "header not object":
            header = [header]
        elif kind == "header":
            header[name] = value if name != "b64" else False
        elif kind == "drop":
            target.pop(name, None)
        elif fault == "claims not an object":
            claims = [claims]
        elif kind == "claim":
            claims[name] = value
        elif fault == "wrong key":
            key = SECRET + "x"
        elif fault == "other algorithm":
            sign_alg = "HS384" if algorithm != "HS384" else "HS512"
        else:
            mangle = name
    return _token(header, claims, sign_alg, key, mangle)


async def _decide(verifier: TokenVerifier, token: str) -> tuple[str, float] | str:
    try:
        return verifier._verify(token, verifier.config.secret)
    except NotAuthenticated:
        return "refused"


@settings(max_examples=500, deadline=None)
@given(
    faults=st.lists(st.sampled_from(_FAULTS), max_size=2),
    value=_values,
    algorithm=st.sampled_from(["HS256", "HS512"]),
    issuer=st.sampled_from(["", "tally"]),
    audience=st.sampled_from(["", "tally"]),
)
async def test_the_shortcut_and_pyjwt_decide_alike(
    faults: list[str], value: Any, algorithm: str, issuer: str, audience: str
) -> None:
    config = AuthConfig(secret=SECRET, algorithm=algorithm, issuer=issuer, audience=audience)
    token = _spoiled(faults, value, algorithm, issuer, audience)
    with_shortcut = TokenVerifier(config=config, clock=lambda: NOW)
    pyjwt_only = TokenVerifier(config=config, clock=lambda: NOW)
    pyjwt_only._plain = None
    assert await _decide(with_shortcut, token) == await _decide(pyjwt_only, token)
    shortcut = PlainChecker(SECRET, algorithm, issuer, audience).plain_claims(token)
    event("shortcut taken" if shortcut is not None else "left to PyJWT")
    if shortcut is not None:  # whatever it takes, PyJWT takes too, with the same claims
        assert shortcut == jwt.decode(
            token,
            SECRET,
            algorithms=[algorithm],
            options={
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "verify_aud": False,
                "verify_iss": False,
            },
        )


@pytest.mark.parametrize("algorithm", ["HS256", "HS384", "HS512"])
@pytest.mark.parametrize(("issuer", "audience"), [("", ""), ("tally", "votes")])
def test_plain_tokens_take_the_shortcut(algorithm: str, issuer: str, audience: str) -> None:
    claims: dict[str, Any] = {"sub": "alice", "exp": NOW + 600, "iat": NOW}
    if issuer:
        claims |= {"iss": issuer, "aud": [audience, "other"]}
    token = jwt.encode(claims, SECRET, algorithm=algorithm, headers={"kid": "k1"})
    checker = PlainChecker(SECRET, algorithm, issuer, audience)
    assert checker.plain_claims(token) == claims
    assert (
        PlainChecker("another secret entirely, 32 bytes+", algorithm, "", "").plain_claims(token)
        is None
    )


def test_a_key_pyjwt_refuses_as_a_secret_gets_no_shortcut() -> None:
    pem = (
        "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----"
    )
    assert TokenVerifier(config=AuthConfig(secret=pem))._plain is None
    assert TokenVerifier(config=AuthConfig(secret=SECRET))._plain is not None
