"""A litestar hello world: the framework's ceiling on this machine, for bench/read.py."""

from litestar import Litestar, get


@get("/hello")
async def hello() -> dict[str, int]:
    """The smallest useful JSON answer."""
    return {"up": 1, "down": 0, "score": 1}


def create_app() -> Litestar:
    """The app factory (uvicorn --factory)."""
    return Litestar([hello])
