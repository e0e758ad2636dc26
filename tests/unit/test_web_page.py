"""The reference web page's server: its files, where the APIs are, and a local-only sign-in."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
from litestar.testing import TestClient

from kernel.auth import AuthConfig, TokenVerifier
from kernel.settings import Settings
from tally.web_page import web_app

SECRET = "a-secret-of-at-least-thirty-two-bytes!!"


def test_local_runs_can_sign_in_and_get_a_token_the_apis_accept() -> None:
    settings = Settings(env="local", jwt_secret=SECRET, command_api_port=9000)
    with TestClient(web_app(settings)) as client:
        page = client.get("/")
        assert page.status_code == 200 and "app.js" in page.text
        config = client.get("/config.json").json()
        assert config["command_api"].endswith(":9000") and config["dev_login"] is True
        signed = client.post("/dev-login", json={"user": "alice"})
        assert signed.status_code == 200
        token = signed.json()["token"]
        bad = client.post("/dev-login", json={"user": "no spaces allowed"})
        assert bad.status_code == 400
    verifier = TokenVerifier(config=AuthConfig(secret=SECRET))
    assert asyncio.run(verifier.user_of(f"Bearer {token}")) == "alice"


@pytest.mark.parametrize("env", ["production", "staging"])
def test_elsewhere_there_is_no_sign_in_route(env: str) -> None:
    settings = msgspec.structs.replace(Settings(env="local"), env=env)
    with TestClient(web_app(settings)) as client:
        assert client.post("/dev-login", json={"user": "alice"}).status_code in (404, 405)
        assert client.get("/config.json").json()["dev_login"] is False
