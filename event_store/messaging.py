"""Kafka for the relay and the projectors: the topic, clients, and the message header contract.

Every message the relay writes on ``tally.events`` carries these headers:

- ``kind``: ``event`` (the value is an envelope) or ``watermark`` (no value);
- ``position``: the event's position, or for a watermark the position the relay has published
  everything up to;
- ``prev``: the position of the event published on the same partition before this one, in the
  same epoch. No event of this partition lies between ``prev`` and ``position``;
- ``epoch`` and ``partitions``: the partition mapping the relay published under. A new epoch
  restarts every partition's chain at the highest position published before it;
- ``type``, ``traceparent``, ``correlation_id``: the event's type and where it came from.

So a projector can tell a duplicate (at or below what it saw) from a gap (``prev`` above it),
and a watermark tells it that a quiet partition has nothing it missed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Literal

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context

EVENT = "event"
WATERMARK = "watermark"


class MessageHeaders(msgspec.Struct, frozen=True, kw_only=True):
    """The headers of one message on the events topic."""

    kind: str = EVENT
    position: int
    prev: int = 0
    epoch: int = 0
    partitions: int = 0
    type: str = ""
    traceparent: str | None = None
    correlation_id: str | None = None


def encode_headers(headers: MessageHeaders) -> list[tuple[str, bytes]]:
    """The Kafka header list of ``headers`` (absent optional values are left out)."""
    encoded = [
        ("kind", headers.kind.encode()),
        ("position", str(headers.position).encode()),
        ("prev", str(headers.prev).encode()),
        ("epoch", str(headers.epoch).encode()),
        ("partitions", str(headers.partitions).encode()),
    ]
    if headers.type:
        encoded.append(("type", headers.type.encode()))
    if headers.traceparent:
        encoded.append(("traceparent", headers.traceparent.encode()))
    if headers.correlation_id:
        encoded.append(("correlation_id", headers.correlation_id.encode()))
    return encoded


class BadHeaders(ValueError):
    """A message on the events topic without the headers the relay writes."""


def decode_headers(raw: Sequence[tuple[str, bytes]] | None) -> MessageHeaders:
    """Read the headers of a consumed message; ``BadHeaders`` when they are not ours."""
    # Once per consumed message: only the text values are decoded (``int`` reads bytes).
    found = dict(raw or ())
    try:
        kind = found.get("kind")
        return MessageHeaders(
            kind=EVENT if kind is None else kind.decode(errors="replace"),
            position=int(found["position"]),
            prev=int(found.get("prev", 0)),
            epoch=int(found.get("epoch", 0)),
            partitions=int(found.get("partitions", 0)),
            type=found.get("type", b"").decode(errors="replace"),
            traceparent=_optional_text(found.get("traceparent")),
            correlation_id=_optional_text(found.get("correlation_id")),
        )
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise BadHeaders(f"not a relay message: headers {sorted(found)}") from exc


def _optional_text(value: bytes | None) -> str | None:
    return None if value is None else value.decode(errors="replace")


class KafkaAccess(msgspec.Struct, frozen=True, kw_only=True):
    """Where the brokers are, how to authenticate to them (every client uses the same), and
    how the topics Tally creates there are replicated."""

    bootstrap: str
    replication_factor: int = 1
    min_insync_replicas: int = 1
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    sasl_username: str = ""
    sasl_password: str = ""
    ssl_cafile: str = ""  # empty: the system's trusted CAs
    ssl_certfile: str = ""  # a client certificate (mutual TLS), with its key
    ssl_keyfile: str = ""

    def client_options(self) -> dict[str, Any]:
        """The keyword arguments every aiokafka client takes for this access."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": self.security_protocol,
        }
        if self.security_protocol.startswith("SASL"):
            options.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=self.sasl_password,
            )
        if self.security_protocol.endswith("SSL"):
            options["ssl_context"] = create_ssl_context(
                cafile=self.ssl_cafile or None,
                certfile=self.ssl_certfile or None,
                keyfile=self.ssl_keyfile or None,
            )
        return options


async def ensure_topic(kafka: KafkaAccess, topic: str, partitions: int) -> None:
    """Create ``topic`` with ``partitions`` partitions, replicated as ``kafka`` says, unless it
    exists."""
    admin = AIOKafkaAdminClient(**kafka.client_options(), request_timeout_ms=10_000)
    await admin.start()
    try:
        new = NewTopic(
            topic,
            partitions,
            kafka.replication_factor,
            topic_configs={"min.insync.replicas": str(kafka.min_insync_replicas)},
        )
        await admin.create_topics([new])
    except TopicAlreadyExistsError:
        pass
    finally:
        await admin.close()


def make_producer(kafka: KafkaAccess, idempotent: bool, timeout_ms: int) -> AIOKafkaProducer:
    """The relay's producer: acks from all replicas, big batches, idempotence by setting.

    ``timeout_ms`` bounds each request, so a broker that stops answering fails a send instead
    of hanging it.
    """
    return AIOKafkaProducer(
        **kafka.client_options(),
        acks="all",
        enable_idempotence=idempotent,
        linger_ms=2,
        max_batch_size=512 * 1024,
        request_timeout_ms=timeout_ms,
        metadata_max_age_ms=5000,
    )


async def close_client(client: AIOKafkaConsumer | AIOKafkaProducer, seconds: float = 10) -> None:
    """Stop an aiokafka client, bounded, swallowing what its shutdown raises.

    aiokafka's ``stop`` awaits internal tasks it has just cancelled, so the ``CancelledError``
    of its own tasks can come out of it (seen while the broker was down): taken for ours, it
    would silently end the task that closes the client. It is re-raised only when this task is
    really being cancelled.
    """
    try:
        await asyncio.wait_for(client.stop(), seconds)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
    except Exception:  # a client that cannot close cleanly is let go
        pass


def make_consumer(
    kafka: KafkaAccess,
    topic: str,
    group: str,
    batch: int,
    timeout_ms: int,
    instance: str = "",
    session_timeout_ms: int = 10_000,
) -> AIOKafkaConsumer:
    """A projector's consumer: offsets committed by hand, after the batch was applied.

    ``instance`` names a static member of the group: restarted under the same name, it gets
    its partitions back without a rebalance (and leaving does not hand them over: they move
    only after ``session_timeout_ms`` without heartbeats).
    """
    return AIOKafkaConsumer(
        topic,
        **kafka.client_options(),
        group_id=group,
        group_instance_id=instance or None,
        session_timeout_ms=session_timeout_ms,
        heartbeat_interval_ms=max(300, session_timeout_ms // 4),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=batch,
        metadata_max_age_ms=5000,
        request_timeout_ms=timeout_ms,
        fetch_max_wait_ms=50,  # a new score should show in milliseconds, not half a second
        # A batch drawn from fewer partitions holds fewer comments, each with more of its votes
        # folded into one write (see docs/performance.md); at most this much is buffered per
        # partition.
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
