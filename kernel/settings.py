"""Typed settings, read once from ``TALLY_*`` environment variables.

Defaults point at the local stack started by ``tally stack up`` (see ``tally.stack``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec


class SettingsError(ValueError):
    """A ``TALLY_*`` variable holds a value of the wrong type."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Every knob of every process. The env name is ``TALLY_`` + the upper-cased field."""

    data_dir: str = ".tally/run"
    pg_dsn: str = "postgresql://postgres@127.0.0.1:15432/tally"
    redis_url: str = "redis://127.0.0.1:16379/0"
    # "cluster": redis_url names one node of a Redis Cluster (the client finds the others).
    redis_mode: Literal["standalone", "cluster"] = "standalone"
    kafka_bootstrap: str = "127.0.0.1:19092"
    es_url: str = "http://127.0.0.1:19200"
    es_comments_alias: str = "tally-comments"
    # Elasticsearch security: an API key (base64 "id:key", as Kibana shows it) and the CA that
    # signed the cluster's certificate (empty: the system's trusted CAs).
    es_api_key: str = ""
    es_ca_certs: str = ""
    es_votes_alias: str = "tally-votes"
    # Vote documents older than this are deleted from the analytics index (0: kept for ever);
    # the event log keeps every vote regardless.
    votes_retention_days: Annotated[int, msgspec.Meta(ge=0)] = 0

    # "local" (set by `make run` and the tests) allows the public development secret and
    # `tally token`; anything else refuses to start without real JWT settings.
    env: str = "production"
    jwt_secret: str = "tally-local-dev-secret-change-me"
    jwt_algorithm: str = "HS256"
    jwt_jwks_url: str = ""  # an identity provider's keys (RS256, ES256...) instead of a secret
    jwt_issuer: str = ""  # the iss tokens must carry; required outside local runs
    jwt_audience: str = ""  # the aud tokens must carry; required outside local runs
    jwt_leeway_seconds: float = 30.0
    token_ttl_seconds: int = 24 * 3600

    # Proxies (addresses or networks, comma-separated) whose X-Forwarded-For names the client,
    # and whose incoming trace sampling decision is honoured; anyone else's is ignored.
    trusted_proxies: str = ""
    # Requests in progress per API worker; past it, 503 at once (0: no limit). Live streams
    # count too, within their own caps.
    http_max_requests: Annotated[int, msgspec.Meta(ge=0)] = 2048
    # A request's line and headers must arrive within this (slow clients hold connections).
    http_head_seconds: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    command_api_host: str = "127.0.0.1"  # where each API binds (0.0.0.0 in containers)
    command_api_port: int = 8000
    command_api_workers: int = 2
    query_api_host: str = "127.0.0.1"
    query_api_port: int = 8001
    query_api_workers: int = 1
    # Browser apps allowed to call the APIs (comma-separated origins; empty: no CORS). The
    # default is the reference web page that `make run` serves (examples/web).
    cors_origins: str = "http://127.0.0.1:8002,http://localhost:8002"
    web_host: str = "127.0.0.1"
    web_port: int = 8002  # the reference web page (served by `tally run`)
    read_wait_ms: int = 2000
    ranking_snapshot_seconds: int = 5
    # Anonymous first pages are shared this long by the query API process (0: off); reads
    # with min_position never use the copy.
    page_cache_ms: int = 250
    ranking_cursor_ttl_seconds: int = 600
    ranking_snapshot_max: int = 1000  # a sort can be paged this far; snapshots hold no more
    # Signs page and search cursors; required outside local runs (locally derived from the JWT
    # secret, which in JWKS mode is the public default).
    cursor_secret: str = ""
    # Live (SSE) streams per query-API process, and per client address.
    live_max_streams: int = 1000
    live_max_streams_per_client: int = 20  # per address block (IPv4 address, IPv6 /64), per user
    live_write_seconds: Annotated[float, msgspec.Meta(gt=0)] = 10.0  # a stalled stream closes

    pg_pool_min: int = 2
    pg_pool_max: int = 8
    # Every client call is bounded: connects, statements, Redis replies, whole commands.
    pg_connect_timeout_seconds: float = 3.0
    pg_statement_timeout_ms: int = 5000
    redis_timeout_ms: int = 500
    rate_limit_timeout_ms: int = 50
    command_deadline_ms: int = 5000
    group_commit_max_queue: int = 4096
    group_commit: bool = True
    group_commit_max_wait_ms: float = 2.0
    group_commit_max_batch: int = 256
    # Batches in flight per process. One: the next batch collects while this one commits, and
    # batches stay large (bench.write: ~15 % more votes/s and a lower p99 than with two).
    group_commit_workers: int = 1

    idempotency_ttl_seconds: int = 24 * 3600
    idempotency_cleanup_interval_seconds: int = 300
    # Per user: votes, and comment posts, edits and deletes (a smooth bucket: GCRA).
    vote_rate_limit: int = 120
    vote_rate_window_seconds: int = 60
    comment_rate_limit: int = 20
    comment_rate_window_seconds: int = 60
    # Per client address block (IPv4 address, IPv6 /64) per minute, and per API worker per 10 s,
    # counted in memory before any store is asked (0: off).
    read_limit_per_address: Annotated[int, msgspec.Meta(ge=0)] = 6000
    search_limit_per_address: Annotated[int, msgspec.Meta(ge=0)] = 600
    write_limit_per_address: Annotated[int, msgspec.Meta(ge=0)] = 1200
    requests_limit_per_worker: Annotated[int, msgspec.Meta(ge=0)] = 100_000
    max_body_bytes: int = 64 * 1024
    command_fast_lane: bool = True  # plain votes answered in front of litestar

    # Kafka security (Confluent Cloud, MSK, Strimzi...): SASL and/or TLS.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = ""
    kafka_ssl_cafile: str = ""
    kafka_ssl_certfile: str = ""  # mutual TLS: the client's certificate and key
    kafka_ssl_keyfile: str = ""
    kafka_topic: str = "tally.events"
    kafka_dlq_topic: str = "tally.events.dlq"
    kafka_partitions: int = 6
    # Topics Tally creates: copies of each partition, and how many must have a write before
    # it is acknowledged (the producer asks for acks from all in-sync replicas).
    kafka_replication_factor: Annotated[int, msgspec.Meta(ge=1)] = 1
    kafka_min_insync_replicas: Annotated[int, msgspec.Meta(ge=1)] = 1
    kafka_group_prefix: str = "tally"
    kafka_idempotent_producer: bool = True
    kafka_timeout_ms: int = 10_000
    relay_batch_size: int = 2000
    relay_poll_interval_ms: float = 20.0
    # Prometheus /metrics of each process kind, on ports of their own (never the API ports).
    command_api_metrics_port: int = 9103
    query_api_metrics_port: int = 9104
    relay_metrics_port: int = 9101
    # A leader that stops renewing for this long is replaced by a standby.
    relay_lease_seconds: float = 10.0
    relay_watermark_interval_ms: float = 200.0
    projector_batch_size: int = 4000  # events per batch at most (a backlog fills them)
    projector_metrics_port: int = 9102
    # A stable name for this projector process in its consumer groups (Kafka static
    # membership): restarted under the same name, it takes its partitions back at once instead
    # of waiting for a rebalance. Unique per process; empty: an anonymous member.
    projector_instance: str = ""
    # A consumer that sends no heartbeat for this long leaves its group and its partitions move
    # (the broker's group.min.session.timeout.ms bounds it from below).
    kafka_session_timeout_ms: Annotated[int, msgspec.Meta(ge=1000)] = 10_000
    # Continuous reconciliation (projectors.reconciler): a pass every interval checks the
    # comments touched since the last one (up to the limit) and the next sweep batch.
    reconcile_interval_seconds: float = 5.0
    reconcile_recent_limit: int = 500
    reconcile_sweep_batch: int = 200
    metrics_host: str = (
        "127.0.0.1"  # where relay and projectors serve /metrics (0.0.0.0 in compose)
    )
    redis_generation: str = "1"

    # Tracing (kernel.tracing): off, OTLP over HTTP to otel_endpoint, or printed spans.
    otel_exporter: Literal["none", "otlp", "console"] = "none"
    otel_endpoint: str = "http://127.0.0.1:4318/v1/traces"
    otel_sample_ratio: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 1.0

    log_format: str = "auto"
    log_level: str = "info"

    @property
    def local(self) -> bool:
        """A local run (``TALLY_ENV=local``): development defaults are allowed."""
        return self.env == "local"

    @property
    def data_path(self) -> Path:
        """The data directory of the local stack, absolute."""
        return Path(self.data_dir).resolve()


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Build settings from an environment mapping (``os.environ`` by default)."""
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    for name in Settings.__struct_fields__:
        value = _value(env, f"TALLY_{name.upper()}")
        if value is not None:
            raw[name] = value
    try:
        settings = msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        field = str(exc).rsplit("$.", 1)[-1].rstrip("`")
        raise SettingsError(f"TALLY_{field.upper()}: {exc}") from None
    _check_together(settings)
    return settings


def _check_together(settings: Settings) -> None:
    """What no single field's type can say: settings that need each other, files that must
    exist. Stops the start with the variable to fix instead of a failure at first use."""
    if settings.kafka_security_protocol.startswith("SASL"):
        for name in ("kafka_sasl_username", "kafka_sasl_password"):
            if not getattr(settings, name):
                raise SettingsError(
                    f"TALLY_{name.upper()}: required when TALLY_KAFKA_SECURITY_PROTOCOL is "
                    f"{settings.kafka_security_protocol}"
                )
    if settings.kafka_ssl_keyfile and not settings.kafka_ssl_certfile:
        raise SettingsError("TALLY_KAFKA_SSL_CERTFILE: required with TALLY_KAFKA_SSL_KEYFILE")
    for name in ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile", "es_ca_certs"):
        path = getattr(settings, name)
        if path and not Path(path).is_file():
            raise SettingsError(f"TALLY_{name.upper()}: no such file: {path}")


def _value(env: Mapping[str, str], variable: str) -> str | None:
    """``VARIABLE``, or the content of the file ``VARIABLE_FILE`` names (Docker and Kubernetes
    secrets), never both."""
    path = env.get(f"{variable}_FILE")
    if path is None:
        return env.get(variable)
    if variable in env:
        raise SettingsError(f"{variable} and {variable}_FILE are both set; set one")
    try:
        # One trailing newline is how editors and `echo` end a file, not part of the secret.
        return Path(path).read_text().removesuffix("\n")
    except OSError as exc:
        raise SettingsError(f"{variable}_FILE: cannot read {path}: {exc.strerror}") from None


def as_environment(settings: Settings) -> dict[str, str]:
    """The ``TALLY_*`` variables that reproduce ``settings`` in a child process."""
    env = {}
    for name in Settings.__struct_fields__:
        value = getattr(settings, name)
        env[f"TALLY_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read on first use."""
    return load_settings()
