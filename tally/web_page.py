"""The reference web page (``examples/web``), served by ``tally serve web`` and ``tally run``.

Static files, plus ``/config.json`` (where the APIs are, as seen from the browser) and, in local
runs only (``TALLY_ENV=local``), ``POST /dev-login``: a token for any user name, so the page
can be tried without an identity provider. Anywhere else that route does not exist (404).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import msgspec
from litestar import Litestar, Request, get, post
from litestar.params import Body
from litestar.static_files import create_static_files_router

from kernel.auth import mint_token
from kernel.settings import Settings

WEB_DIR = Path(__file__).resolve().parents[1] / "examples" / "web"


class DevLogin(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    user: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


class Token(msgspec.Struct, frozen=True):
    user: str
    token: str


def web_app(settings: Settings, directory: Path = WEB_DIR) -> Litestar:
    """The page's server: its files, where the APIs are, and (local only) a dev sign-in."""

    @get("/config.json", include_in_schema=False)
    async def config(request: Request[Any, Any, Any]) -> dict[str, object]:
        host = request.url.hostname or "127.0.0.1"  # the APIs answer on the page's host
        return {
            "command_api": f"http://{host}:{settings.command_api_port}",
            "query_api": f"http://{host}:{settings.query_api_port}",
            "dev_login": settings.local,
        }

    @post("/dev-login", status_code=200, include_in_schema=False)
    async def dev_login(data: Annotated[DevLogin, Body()]) -> Token:
        token = mint_token(
            data.user,
            settings.jwt_secret,
            settings.token_ttl_seconds,
            settings.jwt_algorithm,
            settings.jwt_issuer,
            settings.jwt_audience,
        )
        return Token(data.user, token)

    @get("/health", include_in_schema=False)
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    handlers: list[Any] = [config, health]
    if settings.local:
        handlers.append(dev_login)
    handlers.append(create_static_files_router(path="/", directories=[directory], html_mode=True))
    return Litestar(route_handlers=handlers, openapi_config=None)
