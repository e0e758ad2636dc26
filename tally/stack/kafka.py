"""The local stack's Apache Kafka: KRaft brokers from Maven Central jars, logs on disk.

One address in ``TALLY_KAFKA_BOOTSTRAP`` runs one combined broker and controller; three run a
cluster of three combined nodes (a quorum of three controllers, so losing any one broker keeps
the cluster writable). Ports: a node's client port is its address's, its controller port that
plus ``CONTROLLER_OFFSET``. Each node's log lives under ``<data-dir>/kafka/node-<id>/log`` (the
cluster under ``kafka-cluster/``); the cluster id is kept beside them, so a node whose log was
deleted is formatted again into the same cluster.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from kernel.settings import Settings
from tally.stack import kafka_probe
from tally.stack.base import (
    Server,
    StackError,
    pid_alive,
    port_of,
    port_open,
    read_pid,
    start_process,
    stop_process,
    wait_for,
)
from tally.stack.java import FILES, classpath, ensure_java, jars

CONTROLLER_OFFSET = 10
HEAP = "-Xmx512m"
# The broker's own floor for consumer session timeouts (6 s by default): a dead projector's
# partitions move after its session timeout, so the local stack allows short ones.
MIN_SESSION_TIMEOUT_MS = 1000


@dataclass(frozen=True)
class KafkaNode:
    """One broker of the local stack."""

    node_id: int
    port: int
    home: Path

    @property
    def controller_port(self) -> int:
        return self.port + CONTROLLER_OFFSET

    @property
    def log_dir(self) -> Path:
        return self.home / "log"

    @property
    def pid_file(self) -> Path:
        return self.home / "pid"


def server_properties(node: KafkaNode, voters: list[KafkaNode], replicas: int) -> str:
    """``server.properties`` of ``node`` in a quorum of ``voters``."""
    quorum = ",".join(f"{v.node_id}@127.0.0.1:{v.controller_port}" for v in voters)
    internal = min(replicas, len(voters))
    lines = {
        "process.roles": "broker,controller",
        "node.id": node.node_id,
        "controller.quorum.voters": quorum,
        "listeners": f"PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:"
        f"{node.controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.port}",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": node.log_dir,
        "auto.create.topics.enable": "false",
        "offsets.topic.replication.factor": internal,
        "offsets.topic.num.partitions": 1,
        "transaction.state.log.replication.factor": internal,
        "transaction.state.log.min.isr": min(2, internal),
        "share.coordinator.state.topic.replication.factor": internal,
        "share.coordinator.state.topic.min.isr": min(2, internal),
        "default.replication.factor": internal,
        "min.insync.replicas": min(2, internal),
        "group.initial.rebalance.delay.ms": 0,
        "group.min.session.timeout.ms": MIN_SESSION_TIMEOUT_MS,
    }
    return "".join(f"{key}={value}\n" for key, value in lines.items())


def new_cluster_id() -> str:
    """16 random bytes, URL-safe base64 without padding (what ``StorageTool random-uuid`` gives)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


class Kafka(Server):
    """One KRaft broker, or a cluster of three, as ``TALLY_KAFKA_BOOTSTRAP`` lists."""

    name = "kafka"
    start_seconds = 120.0

    def __init__(self, settings: Settings, port: int) -> None:
        addresses = [a for a in settings.kafka_bootstrap.split(",") if a.strip()]
        self.folder = "kafka" if len(addresses) == 1 else "kafka-cluster"
        super().__init__(settings, port)
        self.nodes = [
            KafkaNode(n, port_of(address.strip(), 9092), self.home / f"node-{n}")
            for n, address in enumerate(addresses, 1)
        ]

    @property
    def ports(self) -> list[int]:
        """The ports of the nodes that are not running (the others hold theirs already)."""
        down = [node for node in self.nodes if self.node_pid(node) is None]
        return [p for node in down for p in (node.port, node.controller_port)]

    @property
    def cluster_id_file(self) -> Path:
        return self.home / "cluster-id"

    @property
    def log_file(self) -> Path:
        return self.home / "kafka.log"

    def node_pid(self, node: KafkaNode) -> int | None:
        return read_pid(node.pid_file)

    def pid(self) -> int | None:
        pids = [self.node_pid(node) for node in self.nodes]
        return pids[0] if all(pids) else None

    def answers(self) -> bool:
        expected = {node.node_id for node in self.nodes}
        return all(kafka_probe.brokers(node.port) >= expected for node in self.nodes)

    def install(self) -> None:
        ensure_java()
        jars("kafka", "kafka.version")

    def launch(self) -> None:
        for node in self.nodes:
            if self.node_pid(node) is None:
                self.start_node(node)

    def cluster_id(self) -> str:
        """The id every node of this stack is formatted with (made once, then kept)."""
        if not self.cluster_id_file.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            self.cluster_id_file.write_text(new_cluster_id() + "\n")
        return self.cluster_id_file.read_text().strip()

    def start_node(self, node: KafkaNode) -> None:
        """Format ``node``'s log directory if it has none, then start its JVM."""
        java, libs = ensure_java(), jars("kafka", "kafka.version")
        node.home.mkdir(parents=True, exist_ok=True)
        replicas = len(self.nodes)
        config = node.home / "server.properties"
        config.write_text(server_properties(node, self.nodes, replicas))
        cp = classpath(libs)
        if not (node.log_dir / "meta.properties").exists():
            self._format(java, cp, config, node)
        logging = f"file:{FILES / 'kafka-log4j2.properties'}"
        argv = [
            java,
            HEAP,
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:InitiatingHeapOccupancyPercent=35",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={logging}",
            f"-Dkafka.logs.dir={node.home}",
            "-cp",
            cp,
            "kafka.Kafka",
            str(config),
        ]
        start_process(argv, node.home / "kafka.log", node.home, node.pid_file)

    def _format(self, java: str, cp: str, config: Path, node: KafkaNode) -> None:
        done = subprocess.run(
            [
                java,
                "-cp",
                cp,
                "kafka.tools.StorageTool",
                "format",
                "-g",
                "-t",
                self.cluster_id(),
                "-c",
                str(config),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise StackError(f"kafka storage format failed for node {node.node_id}: {done.stdout}")

    def stop_node(self, node: KafkaNode) -> None:
        """Stop one broker (a controlled shutdown; SIGKILL past a minute)."""
        pid = self.node_pid(node)
        if pid is not None:
            stop_process(pid, f"kafka node {node.node_id}")
        node.pid_file.unlink(missing_ok=True)

    def stop(self) -> None:
        # Every node this folder started, whatever addresses the settings name now.
        for pid_file in sorted(self.home.glob("node-*/pid"), reverse=True):
            pid = read_pid(pid_file)
            if pid is not None:
                stop_process(pid, f"kafka ({pid_file.parent.name})")
            pid_file.unlink(missing_ok=True)

    def kill_node(self, node: KafkaNode) -> None:
        """SIGKILL one broker (the fault "a broker crashed"); ``up`` starts it again."""
        pid = self.node_pid(node)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            wait_for(lambda: not pid_alive(pid), 10, f"kafka node {node.node_id} to die")
            # A JVM's main thread can be a zombie while its other threads still exit and hold
            # the listeners: restarting must not find its own ports taken.
            ports = (node.port, node.controller_port)
            wait_for(
                lambda: not any(port_open(p) for p in ports),
                30,
                f"kafka node {node.node_id}'s ports",
            )
        node.pid_file.unlink(missing_ok=True)

    def lose_disk(self, node: KafkaNode) -> None:
        """The fault "a broker lost its disk": kill ``node`` and delete its log (``up`` formats
        it again, into the same cluster)."""
        self.kill_node(node)
        shutil.rmtree(node.log_dir, ignore_errors=True)

    def lose_disks(self) -> None:
        """Every broker lost its disk: every topic, offset and group is gone."""
        for node in self.nodes:
            self.lose_disk(node)
