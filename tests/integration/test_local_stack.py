"""The local stack: every server answers a real request, and `up` is idempotent."""

from __future__ import annotations

import itertools
import uuid

import httpx
import msgspec
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from event_store.messaging import ensure_topic
from kernel.settings import Settings
from tally import stack
from tally.clients import kafka_access, redis_client
from tests.pipeline import redis_server_name


def test_a_second_up_is_a_no_op_and_status_shows_everything_running(settings: Settings) -> None:
    said: list[str] = []
    stack.stack_up(settings, said.append)
    assert all(line.endswith("already running") for line in said), said
    assert [s.name for s in stack.stack_status(settings) if s.running] == [
        "postgres",
        redis_server_name(settings),
        "kafka",
        "opensearch",
        "search-bridge",
    ]


def test_a_taken_port_is_a_clear_error(settings: Settings) -> None:
    # Point the Redis server at the PostgreSQL port, which is taken by our own PostgreSQL.
    other = msgspec.structs.replace(
        settings, redis_url=settings.pg_dsn.replace("postgresql://postgres@", "redis://")
    )
    server = next(s for s in stack.servers(other) if s.name == redis_server_name(settings))
    server.home = settings.data_path / "redis-elsewhere"
    with pytest.raises(stack.StackError, match="is taken by another process"):
        server.up()


async def test_the_redis_cluster_has_three_masters_sharing_every_slot(settings: Settings) -> None:
    if settings.redis_mode != "cluster":
        pytest.skip("runs in the Redis Cluster pass of make test (TALLY_REDIS_MODE=cluster)")
    client = redis_client(settings)
    try:
        nodes = await client.cluster_nodes()  # type: ignore[union-attr]
    finally:
        await client.aclose()
    masters = {address: node for address, node in nodes.items() if "master" in node["flags"]}
    assert len(masters) == 3
    slots = sorted(tuple(map(int, r)) for n in masters.values() for r in n["slots"])
    assert slots[0][0] == 0 and slots[-1][1] == 16383
    assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(slots))


async def test_redis_persists_with_aof(settings: Settings) -> None:
    client = redis_client(settings)
    try:
        config = await client.config_get("appendonly")
    finally:
        await client.aclose()
    assert config["appendonly"] == "yes"


async def test_kafka_broker_round_trips_a_message(settings: Settings) -> None:
    topic = f"tally.stack-check.{uuid.uuid4().hex[:8]}"
    await ensure_topic(kafka_access(settings), topic, 1)  # the stack creates no topic on demand
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"ping", key=b"k")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        message = await consumer.getone()
    finally:
        await consumer.stop()
    assert message.value == b"ping" and message.key == b"k"


def test_elasticsearch_api_indexes_and_finds_a_document(settings: Settings) -> None:
    index = f"tally-stack-check-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=settings.es_url, timeout=10) as es:
        put = es.put(f"/{index}/_doc/1", params={"refresh": "true"}, json={"word": "hello"})
        assert put.status_code in (200, 201), put.text
        found = es.post(f"/{index}/_search", json={"query": {"match": {"word": "hello"}}})
        es.delete(f"/{index}")
    assert found.json()["hits"]["hits"][0]["_id"] == "1"
