"""The local stack: private PostgreSQL, Redis, Apache Kafka and OpenSearch servers under one
data directory, on ports taken from the settings (``tally stack up|down|status|reset``).

One module per server: ``postgres``, ``redis``, ``kafka`` and ``search`` (with the header
``search_bridge`` in front of it); ``java`` resolves the Java servers' jars from Maven Central;
``base`` holds what they share.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable

import msgspec
import psycopg

from kernel.settings import Settings
from tally.stack.base import (
    Server,
    ServerStatus,
    StackError,
    ensure_browser,
    ensure_compose_cli,
    port_of,
    port_open,
)
from tally.stack.kafka import Kafka
from tally.stack.postgres import BACKUP_STANZA, PG_TUNING, Postgres
from tally.stack.redis import RedisClusterServer, RedisServer
from tally.stack.search import OpenSearch
from tally.stack.search_bridge import SearchBridge

__all__ = [
    "BACKUP_STANZA",
    "PG_TUNING",
    "Kafka",
    "OpenSearch",
    "Postgres",
    "SearchBridge",
    "Server",
    "ServerStatus",
    "StackError",
    "ensure_browser",
    "ensure_compose_cli",
    "kafka_server",
    "port_open",
    "postgres_server",
    "servers",
    "stack_down",
    "stack_reset",
    "stack_status",
    "stack_up",
]


def postgres_server(settings: Settings) -> Postgres:
    """The local stack's PostgreSQL for ``settings`` (a URL or a key=value DSN)."""
    port = psycopg.conninfo.conninfo_to_dict(settings.pg_dsn).get("port") or 5432
    return Postgres(settings, int(port))


def kafka_server(settings: Settings) -> Kafka:
    """The local stack's Kafka: one broker per address in ``TALLY_KAFKA_BOOTSTRAP``."""
    return Kafka(settings, port_of(settings.kafka_bootstrap.split(",")[0], 9092))


def servers(settings: Settings) -> list[Server]:
    """Every server of the local stack, in start order."""
    search_port = port_of(settings.es_url, 9200)
    return [
        postgres_server(settings),
        (RedisClusterServer if settings.redis_mode == "cluster" else RedisServer)(
            settings, port_of(settings.redis_url, 6379)
        ),
        kafka_server(settings),
        OpenSearch(settings, search_port),
        SearchBridge(settings, search_port),
    ]


def stack_up(settings: Settings, report: Callable[[str], None] = print) -> None:
    """Start every server that is not running yet; wait until each answers."""
    settings.data_path.mkdir(parents=True, exist_ok=True)
    for server in servers(settings):
        report(f"{server.name:<14} :{server.port:<6} {server.up()}")


def _with_other_kinds(settings: Settings) -> list[Server]:
    """The servers, plus the Redis and Kafka of the other kind (one server or a cluster) if
    this folder started them."""
    found = servers(settings)
    other_redis = RedisServer if settings.redis_mode == "cluster" else RedisClusterServer
    single = "," not in settings.kafka_bootstrap
    other_bootstrap = "127.0.0.1:1,127.0.0.1:2,127.0.0.1:3" if single else "127.0.0.1:1"
    extra = [
        other_redis(settings, 0),
        kafka_server(msgspec.structs.replace(settings, kafka_bootstrap=other_bootstrap)),
    ]
    return found + [server for server in extra if server.home.exists()]


def stack_down(settings: Settings, report: Callable[[str], None] = print) -> None:
    """Stop what this stack started (never anything else)."""
    for server in reversed(_with_other_kinds(settings)):
        was_running = server.pid() is not None
        server.stop()
        report(f"{server.name:<14} :{server.port:<6} {'stopped' if was_running else 'not running'}")


def stack_status(settings: Settings) -> list[ServerStatus]:
    """Health of each server."""
    return [server.status() for server in servers(settings)]


def stack_reset(settings: Settings, report: Callable[[str], None] = print) -> None:
    """Stop everything and delete the data directory (and data kept elsewhere for it)."""
    stack_down(settings, report)
    for server in _with_other_kinds(settings):
        server.remove_data()
    shutil.rmtree(settings.data_path, ignore_errors=True)
    report(f"removed {settings.data_path}")
