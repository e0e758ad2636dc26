"""A token's subject is judged once, the same whichever path checked its signature: surrogates,
control characters and over-long ids are refused (401), whatever the JSON says."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel.auth import NotAuthenticated, TokenVerifier, valid_subject

SECRET = "s" * 32
NOW = time.time()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def signed(payload: bytes) -> str:
    """An HS256 token of these exact payload bytes (whatever JSON, or not, they hold)."""
    head = _b64(b'{"alg":"HS256","typ":"JWT"}') + "." + _b64(payload)
    tag = hmac.new(SECRET.encode(), head.encode(), hashlib.sha256).digest()
    return head + "." + _b64(tag)


def verdict(verifier: TokenVerifier, token: str) -> str | None:
    try:
        return asyncio.run(verifier.user_of(f"Bearer {token}"))
    except NotAuthenticated:
        return None


def both() -> tuple[TokenVerifier, TokenVerifier]:
    """The verifier as the APIs run it (plain shortcut first), and one with PyJWT alone."""
    fast = TokenVerifier(secret=SECRET, clock=lambda: NOW)
    slow = TokenVerifier(secret=SECRET, clock=lambda: NOW)
    slow._plain = None
    return fast, slow


subjects = st.one_of(
    st.text(max_size=140),
    st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), max_size=3).map(
        lambda s: "x" + s
    ),
    st.sampled_from(["x\ud800", "nul\x00", "\x07", "\u202e", "a\u2028b", "ok", "юзер", "x" * 129]),
)


@settings(max_examples=400, deadline=None)
@given(subjects)
def test_both_token_paths_give_the_same_verdict_on_any_subject(subject: str) -> None:
    payload = json.dumps({"sub": subject, "exp": NOW + 60}).encode()  # \\ud800 escapes kept
    token = signed(payload)
    fast, slow = both()
    got_fast, got_slow = verdict(fast, token), verdict(slow, token)
    assert got_fast == got_slow
    as_read = json.loads(payload)["sub"]  # a surrogate pair's escapes read as one character
    assert (got_fast is not None) == valid_subject(as_read)
    if got_fast is not None:
        assert got_fast == as_read
        got_fast.encode("utf-8")  # every accepted subject is valid UTF-8


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=60))
def test_both_paths_agree_on_payloads_that_are_not_even_text(junk: bytes) -> None:
    fast, slow = both()
    token = signed(b'{"exp": %d, "sub": "' % (NOW + 60) + junk + b'"}')
    assert verdict(fast, token) == verdict(slow, token)


@pytest.mark.parametrize(
    "subject",
    ["x\ud800", "nul\x00inside", "bell\x07", "\u202eevil", "line\u2028sep", "", "x" * 129],
)
def test_a_hostile_subject_is_not_authenticated(subject: str) -> None:
    fast, _ = both()
    assert verdict(fast, signed(json.dumps({"sub": subject, "exp": NOW + 60}).encode())) is None


@pytest.mark.parametrize("subject", ["alice", "юзер-42", "user@example.com", "a b", "x" * 128])
def test_ordinary_subjects_are_accepted(subject: str) -> None:
    fast, slow = both()
    token = signed(json.dumps({"sub": subject, "exp": NOW + 60}).encode())
    assert verdict(fast, token) == verdict(slow, token) == subject
