"""The real Kafka broker crashed, lost its disk, or lost a member of its cluster under voting.

A broker's log is on disk: after a crash nothing needs healing from the store (the projectors
may still catch up from it while the broker is away, which the watchdog logs as a standstill).
A broker that lost its disk lost messages: the projectors heal those from the event store.
"""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from kernel.settings import Settings
from tally import stack
from tally.clients import kafka_access
from tests.faults.harness import System, report


def heals(system: System, cause: str) -> int:
    """Ranges the projectors healed from the store for ``cause`` (gap or standstill)."""
    return sum(1 for entry in system.logged("gap_healing") if entry.get("cause") == cause)


def _kafka(servers: dict[str, stack.Server]) -> stack.Kafka:
    broker = servers["kafka"]
    assert isinstance(broker, stack.Kafka)
    return broker


@pytest.mark.parametrize("dead", [1, 4])
async def test_a_crashed_broker_comes_back_with_its_log_and_no_vote_is_lost(
    system: System, load: Any, servers: dict[str, stack.Server], dead: int
) -> None:
    broker = _kafka(servers)
    async with load(seed=40 + dead) as run:
        await asyncio.sleep(4)
        for node in broker.nodes:  # every broker: on the single-node stack, the only one
            await asyncio.to_thread(broker.kill_node, node)
        await asyncio.sleep(dead)
        await asyncio.to_thread(broker.up)
        back = time.monotonic()
        await asyncio.sleep(5)
        took, verdict = await run.finish()
    report(
        "broker-sigkill",
        dead_s=dead,
        healed_s=round(time.monotonic() - back, 1),
        after_load_s=round(took, 1),
        lost_in_kafka_heals=heals(system, "gap"),
        standstill_heals=heals(system, "standstill"),
        acked=len(run.voters.tally.acked),
        vote_statuses=run.voters.tally.statuses,
    )
    assert verdict.ok, str(verdict)
    assert all(system.alive().values()), system.alive()
    # The log survived the crash: no message that the relay published was missing.
    assert heals(system, "gap") == 0, system.logged("gap_healing")[:3]
    assert not run.readers.reads.anomalies, run.readers.reads.anomalies[:5]


async def test_a_broker_that_lost_its_disk_is_healed_from_the_event_store(
    system: System, load: Any, servers: dict[str, stack.Server]
) -> None:
    broker = _kafka(servers)
    async with load(seed=45) as run:
        await asyncio.sleep(4)
        await asyncio.to_thread(broker.lose_disks)  # every topic, offset and group is gone
        await asyncio.sleep(2)
        await asyncio.to_thread(broker.up)
        back = time.monotonic()
        await asyncio.sleep(8)
        took, verdict = await run.finish()
    report(
        "broker-lost-disk",
        healed_s=round(time.monotonic() - back, 1),
        after_load_s=round(took, 1),
        lost_in_kafka_heals=heals(system, "gap"),
        standstill_heals=heals(system, "standstill"),
        new_epochs=len(system.logged("relay_new_epoch")),
        acked=len(run.voters.tally.acked),
    )
    assert verdict.ok, str(verdict)
    assert all(system.alive().values()), system.alive()
    assert not run.readers.reads.anomalies, run.readers.reads.anomalies[:5]


async def test_the_relay_and_the_broker_killed_together_lose_no_vote(
    system: System, load: Any, servers: dict[str, stack.Server]
) -> None:
    broker = _kafka(servers)
    async with load(seed=46) as run:
        await asyncio.sleep(4)
        system.kill("relay", signal.SIGKILL)
        for node in broker.nodes:
            await asyncio.to_thread(broker.kill_node, node)
        await asyncio.sleep(3)
        await asyncio.to_thread(broker.up)
        system.start("relay")
        back = time.monotonic()
        await asyncio.sleep(5)
        took, verdict = await run.finish()
    report(
        "relay-and-broker-sigkill",
        healed_s=round(time.monotonic() - back, 1),
        after_load_s=round(took, 1),
        lost_in_kafka_heals=heals(system, "gap"),
        acked=len(run.voters.tally.acked),
    )
    assert verdict.ok, str(verdict)
    assert heals(system, "gap") == 0, system.logged("gap_healing")[:3]
    assert not run.readers.reads.anomalies, run.readers.reads.anomalies[:5]


async def _leaders(settings: Settings, topic: str) -> dict[int, int]:
    """Partitions led per broker node id."""
    admin = AIOKafkaAdminClient(**kafka_access(settings).client_options())
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    led: dict[int, int] = {}
    for partition in described[0]["partitions"]:
        led[partition["leader"]] = led.get(partition["leader"], 0) + 1
    return led


async def _in_sync(settings: Settings, topic: str, replicas: int) -> bool:
    admin = AIOKafkaAdminClient(**kafka_access(settings).client_options())
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return all(len(p["isr"]) == replicas for p in described[0]["partitions"])


async def test_in_a_cluster_the_broker_leading_most_partitions_then_the_next_die_under_load(
    system: System, load: Any, servers: dict[str, stack.Server]
) -> None:
    broker = _kafka(servers)
    if len(broker.nodes) < 3:
        pytest.skip("runs in the Kafka cluster pass of make test (three brokers)")
    config = system.config
    topic = config.kafka_topic
    killed: list[int] = []
    async with load(seed=47) as run:
        await asyncio.sleep(4)
        for _ in range(2):
            led = await _leaders(config, topic)
            victim = max((n for n in led if n not in killed[-1:]), key=lambda n: led[n])
            node = next(n for n in broker.nodes if n.node_id == victim)
            await asyncio.to_thread(broker.kill_node, node)
            killed.append(victim)
            await asyncio.sleep(4)  # votes go on: two replicas of three are enough
            await asyncio.to_thread(broker.up)
            deadline = time.monotonic() + 60
            while not await _in_sync(config, topic, len(broker.nodes)):
                assert time.monotonic() < deadline, "the broker never caught up"
                await asyncio.sleep(0.5)
        back = time.monotonic()
        await asyncio.sleep(3)
        took, verdict = await run.finish()
    report(
        "cluster-leader-sigkill",
        killed=killed,
        healed_s=round(time.monotonic() - back, 1),
        after_load_s=round(took, 1),
        lost_in_kafka_heals=heals(system, "gap"),
        acked=len(run.voters.tally.acked),
        vote_statuses=run.voters.tally.statuses,
    )
    assert verdict.ok, str(verdict)
    assert heals(system, "gap") == 0, system.logged("gap_healing")[:3]  # acks=all, min ISR 2
    assert not run.readers.reads.anomalies, run.readers.reads.anomalies[:5]
