"""Elasticsearch behind TLS and an API key, as a managed cluster is: the processes trust the
configured CA and send the configured key, and say so in one line when either is wrong.

A small TLS front (trustme certificates) checks every connection's first request for the key
and passes the bytes on to the real Elasticsearch-API server of the test stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trustme
from elasticsearch import AsyncElasticsearch
from psycopg_pool import AsyncConnectionPool

from kernel.settings import Settings
from tests.pipeline import record_history, run_cli

API_KEY = "dGFsbHk6czNjcmV0"  # base64 "tally:s3cret", the form Kibana hands out


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


@contextlib.asynccontextmanager
async def tls_front(upstream: str, ca: trustme.CA) -> AsyncIterator[int]:
    """An HTTPS port in front of ``upstream`` (host:port) that wants ``ApiKey API_KEY``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    host, port = upstream.split(":")

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if f"authorization: ApiKey {API_KEY}\r\n".encode() not in head:
            body = b'{"error":{"type":"security_exception"},"status":401}'
            writer.write(
                b"HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\n"
                b"x-elastic-product: Elasticsearch\r\n"
                + f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        up_writer.write(head)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


@pytest.fixture
def ca_file(tmp_path: Path) -> tuple[trustme.CA, Path]:
    ca = trustme.CA()
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return ca, path


async def test_a_replay_and_verify_go_through_tls_with_an_api_key(
    settings: Settings, apool: AsyncConnectionPool[Any], ca_file: tuple[trustme.CA, Path]
) -> None:
    ca, path = ca_file
    await record_history(apool, 30, seed=11)
    upstream = settings.es_url.removeprefix("http://")
    alias = f"test-secure-votes-{uuid.uuid4().hex[:8]}"
    async with tls_front(upstream, ca) as port:
        secured = msgspec.structs.replace(
            settings,
            es_url=f"https://127.0.0.1:{port}",
            es_api_key=API_KEY,
            es_ca_certs=str(path),
            es_votes_alias=alias,
        )
        try:
            replayed = await run_cli(secured, "replay", "--projection", "votes")
            assert replayed.returncode == 0, replayed.stderr
            verified = await run_cli(secured, "verify", "--projection", "votes", "--wait", "5")
            assert verified.returncode == 0, verified.stdout + verified.stderr
        finally:
            async with AsyncElasticsearch(settings.es_url) as es:
                for index in await es.indices.get(index=f"{alias}-*"):
                    await es.indices.delete(index=index)


async def test_a_wrong_key_or_an_untrusted_certificate_is_one_line(
    settings: Settings, ca_file: tuple[trustme.CA, Path], tmp_path: Path
) -> None:
    ca, path = ca_file
    other_ca = tmp_path / "other.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    upstream = settings.es_url.removeprefix("http://")
    async with tls_front(upstream, ca) as port:
        url = f"https://127.0.0.1:{port}"
        cases = {
            "credentials refused (TALLY_ES_API_KEY)": (API_KEY[::-1], str(path)),
            "CERTIFICATE_VERIFY_FAILED": (API_KEY, str(other_ca)),
        }
        for expected, (key, trusted) in cases.items():
            wrong = msgspec.structs.replace(
                settings, es_url=url, es_api_key=key, es_ca_certs=trusted, es_votes_alias="none"
            )
            done = await run_cli(wrong, "verify", "--projection", "votes", "--wait", "1")
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
            assert len(lines) == 1 and lines[0].startswith(f"cannot reach Elasticsearch at {url}")
            assert expected in lines[0], lines[0]
