"""Clients of Kafka, Elasticsearch and Redis built from the settings: one place knows how to
reach and authenticate to each store, so every process and command does it the same way."""

from __future__ import annotations

from typing import Any

from elasticsearch import AsyncElasticsearch
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster

from event_store.messaging import KafkaAccess
from kernel.redis_client import AnyRedis, pack_with_hiredis
from kernel.settings import Settings


def kafka_access(settings: Settings) -> KafkaAccess:
    """The brokers and the credentials every Kafka client of this deployment uses."""
    return KafkaAccess(
        bootstrap=settings.kafka_bootstrap,
        replication_factor=settings.kafka_replication_factor,
        min_insync_replicas=settings.kafka_min_insync_replicas,
        security_protocol=settings.kafka_security_protocol,
        sasl_mechanism=settings.kafka_sasl_mechanism,
        sasl_username=settings.kafka_sasl_username,
        sasl_password=settings.kafka_sasl_password,
        ssl_cafile=settings.kafka_ssl_cafile,
        ssl_certfile=settings.kafka_ssl_certfile,
        ssl_keyfile=settings.kafka_ssl_keyfile,
    )


def elasticsearch_options(settings: Settings) -> dict[str, Any]:
    """The connection and credential arguments of an Elasticsearch client."""
    options: dict[str, Any] = {"hosts": [settings.es_url]}
    if settings.es_api_key:
        options["api_key"] = settings.es_api_key
    if settings.es_ca_certs:
        options["ca_certs"] = settings.es_ca_certs
    return options


def elasticsearch(settings: Settings, **client: Any) -> AsyncElasticsearch:
    """An Elasticsearch client for this deployment; ``client``: timeouts, retries."""
    return AsyncElasticsearch(**elasticsearch_options(settings), **client)


def redis_client(settings: Settings, pool_wait: float | None = None, **options: Any) -> AnyRedis:
    """A Redis client for ``TALLY_REDIS_MODE``; ``options``: timeouts, connections (per node
    in a cluster). ``pool_wait``: with every connection busy, wait this long for one, then fail
    (one server; a cluster client fails at once)."""
    if settings.redis_mode == "cluster":
        return pack_with_hiredis(RedisCluster.from_url(settings.redis_url, **options))
    if pool_wait is not None:
        pool = BlockingConnectionPool.from_url(settings.redis_url, timeout=pool_wait, **options)
        return pack_with_hiredis(Redis(connection_pool=pool))
    return pack_with_hiredis(Redis.from_url(settings.redis_url, **options))


def redis_subscriber(settings: Settings) -> Redis:
    """A connection for pub/sub. In a cluster, the node ``TALLY_REDIS_URL`` names hears every
    PUBLISH (classic pub/sub is broadcast to all nodes), so one node is enough."""
    client: Redis = Redis.from_url(
        settings.redis_url, socket_connect_timeout=1, health_check_interval=10
    )
    return client
