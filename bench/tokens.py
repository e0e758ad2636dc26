"""Microseconds to check a bearer token an API worker has not seen yet, and one it has.

    python -m bench.tokens [--tokens 20000]

Three ways, on the same freshly minted HS256 tokens: PyJWT alone, ``TokenVerifier`` (the plain
token shortcut of ``kernel.plain_jwt``, PyJWT for anything else) and a token already in the
verifier's cache. Needs no server.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from bench.common import report
from kernel.auth import DEV_SECRET, TokenVerifier, mint_token


async def _per_check(verifier: TokenVerifier, headers: list[str]) -> float:
    started = time.perf_counter()
    for header in headers:
        await verifier.user_of(header)
    return (time.perf_counter() - started) / len(headers) * 1e6


async def measure(count: int) -> dict[str, Any]:
    """µs per check: PyJWT alone, the verifier on new tokens, the verifier on cached ones."""
    headers = [f"Bearer {mint_token(f'user-{n}', DEV_SECRET, 3600)}" for n in range(count)]
    pyjwt_only = TokenVerifier()
    pyjwt_only._plain = None  # what every new token cost before the shortcut
    verifier = TokenVerifier()
    return {
        "tokens": count,
        "pyjwt_us": round(await _per_check(pyjwt_only, headers), 2),
        "new_token_us": round(await _per_check(verifier, headers), 2),
        "cached_us": round(await _per_check(verifier, headers), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=20_000)
    result = asyncio.run(measure(parser.parse_args().tokens))
    print(
        f"token check: PyJWT {result['pyjwt_us']} µs, shortcut {result['new_token_us']} µs,"
        f" cached {result['cached_us']} µs",
        file=sys.stderr,
    )
    report("tokens", result)


if __name__ == "__main__":
    main()
