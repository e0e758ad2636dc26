"""Clients of Kafka and Elasticsearch built from the settings: one place knows how to reach
and authenticate to each store, so every process and command does it the same way."""

from __future__ import annotations

from typing import Any

from elasticsearch import AsyncElasticsearch

from event_store.messaging import KafkaAccess
from kernel.settings import Settings


def kafka_access(settings: Settings) -> KafkaAccess:
    """The brokers and the credentials every Kafka client of this deployment uses."""
    return KafkaAccess(
        bootstrap=settings.kafka_bootstrap,
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
