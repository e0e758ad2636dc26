"""The header bridge: the official client works against the local OpenSearch through it, and it
rewrites only the headers that would stop the client."""

from __future__ import annotations

import uuid

import httpx
import pytest
from elasticsearch import AsyncElasticsearch, NotFoundError

from kernel.settings import Settings
from tally.stack.base import port_of
from tally.stack.search import engine_port

COMPATIBLE = "application/vnd.elasticsearch+json; compatible-with=9"
COMPATIBLE_NDJSON = "application/vnd.elasticsearch+x-ndjson; compatible-with=9"


def _engine(settings: Settings) -> str:
    return f"http://127.0.0.1:{engine_port(port_of(settings.es_url, 9200))}"


def test_the_engine_alone_refuses_what_the_client_sends_and_says_nothing_of_its_product(
    settings: Settings,
) -> None:
    refused = httpx.post(
        f"{_engine(settings)}/_search",
        content=b"{}",
        headers={"Content-Type": COMPATIBLE, "Accept": COMPATIBLE},
        timeout=10,
    )
    assert refused.status_code == 406
    plain = httpx.get(f"{_engine(settings)}/", timeout=10)
    assert plain.status_code == 200 and "x-elastic-product" not in plain.headers
    assert plain.json()["version"]["distribution"] == "opensearch"


def test_through_the_bridge_compatible_requests_are_answered_with_the_product_header(
    settings: Settings,
) -> None:
    index = f"bridge-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=settings.es_url, timeout=10) as bridge:
        info = bridge.get("/", headers={"Accept": COMPATIBLE})
        assert info.status_code == 200 and info.headers["x-elastic-product"] == "Elasticsearch"
        searched = bridge.post(
            "/_search", content=b"{}", headers={"Content-Type": COMPATIBLE, "Accept": COMPATIBLE}
        )
        assert searched.status_code == 200, searched.text
        bulk = "\n".join(
            f'{{"index": {{"_index": "{index}", "_id": "{n}"}}}}\n{{"word": "w{n}"}}'
            for n in range(3)
        )
        written = bridge.post(
            "/_bulk",
            params={"refresh": "true"},
            content=bulk + "\n",
            headers={"Content-Type": COMPATIBLE_NDJSON, "Accept": COMPATIBLE},
        )
        assert written.status_code == 200 and written.json()["errors"] is False
        missing = bridge.get(f"/{index}/_doc/nope", headers={"Accept": COMPATIBLE})
        assert missing.status_code == 404  # errors carry the header too (the client checks)
        assert missing.headers["x-elastic-product"] == "Elasticsearch"
        head = bridge.head(f"/{index}", headers={"Accept": COMPATIBLE})
        assert head.status_code == 200 and head.headers["x-elastic-product"] == "Elasticsearch"
        # Bodies and other headers pass untouched: the answer is the engine's own.
        direct = httpx.get(f"{_engine(settings)}/{index}/_doc/1", timeout=10).json()
        bridged = bridge.get(f"/{index}/_doc/1", headers={"Accept": COMPATIBLE}).json()
        assert bridged == direct
        bridge.delete(f"/{index}")


async def test_the_official_client_indexes_searches_and_reports_errors_through_the_bridge(
    settings: Settings,
) -> None:
    index = f"bridge-{uuid.uuid4().hex[:8]}"
    es = AsyncElasticsearch(settings.es_url, request_timeout=10)
    try:
        await es.index(index=index, id="1", document={"word": "ёжик hedgehog"}, refresh=True)
        found = await es.search(index=index, query={"match": {"word": "hedgehog"}})
        assert [hit["_id"] for hit in found["hits"]["hits"]] == ["1"]
        assert await es.indices.exists(index=index)
        with pytest.raises(NotFoundError):
            await es.get(index=index, id="2")
    finally:
        await es.options(ignore_status=404).indices.delete(index=index)
        await es.close()
