"""The local stack's Redis: one server, or a real three-master Redis Cluster, with AOF on."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

from tally.stack.base import Server, StackError, apt_install, pid_alive, start_process, wait_for


class RedisServer(Server):
    name = "redis"

    def install(self) -> None:
        if not shutil.which("redis-server"):
            apt_install("redis-server")

    def answers(self) -> bool:
        return _pings(self.port)

    def launch(self) -> None:
        self.spawn(self.argv(self.port, self.home))

    @staticmethod
    def argv(port: int, folder: Path) -> list[str]:
        """A private redis-server on ``port`` keeping its AOF in ``folder``."""
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        return [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(folder),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
        ]


def _pid_dead(pid: int) -> bool:
    return not pid_alive(pid)


def _redis_answer(port: int, command: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
        sock.sendall(command + b"\r\n")
        return sock.recv(4096)


def _pings(port: int) -> bool:
    """Does a Redis server answer PING on ``port``?"""
    try:
        return _redis_answer(port, b"PING").startswith(b"+PONG")
    except OSError:
        return False


class RedisClusterServer(RedisServer):
    """A real Redis Cluster: three masters on ``port``, ``port + 1`` and ``port + 2``, joined
    by ``redis-cli --cluster create`` (hash slots split in three), AOF on like the single one."""

    name = "redis-cluster"
    size = 3

    @property
    def nodes(self) -> list[int]:
        return [self.port + n for n in range(self.size)]

    def _node_home(self, port: int) -> Path:
        return self.home / f"node-{port}"

    def _pids(self) -> list[int]:
        """The nodes this folder started, whatever port the settings name now."""
        pids = []
        for pid_file in sorted(self.home.glob("node-*/pid")):
            with contextlib.suppress(ValueError):
                pids.append(int(pid_file.read_text().strip()))
        return pids

    def pid(self) -> int | None:
        pids = self._pids()
        alive = len(pids) == self.size and all(pid_alive(p) for p in pids)
        return pids[0] if alive else None

    def answers(self) -> bool:
        try:
            return all(b"cluster_state:ok" in _redis_answer(p, b"CLUSTER INFO") for p in self.nodes)
        except OSError:
            return False

    def launch(self) -> None:
        for port in self.nodes:
            home = self._node_home(port)
            home.mkdir(parents=True, exist_ok=True)
            argv = [
                *self.argv(port, home),
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "5000",
            ]
            start_process(argv, self.log_file, home, home / "pid", None)
        for port in self.nodes:
            wait_for(functools.partial(_pings, port), 30, f"redis node on port {port}")
        # Joined before (nodes.conf kept across restarts): the nodes find each other again.
        if b"cluster_known_nodes:1\r\n" in _redis_answer(self.port, b"CLUSTER INFO"):
            created = subprocess.run(
                [
                    shutil.which("redis-cli") or "/usr/bin/redis-cli",
                    "--cluster",
                    "create",
                    *[f"127.0.0.1:{p}" for p in self.nodes],
                    "--cluster-replicas",
                    "0",
                    "--cluster-yes",
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if created.returncode != 0:
                raise StackError(f"redis-cli --cluster create failed: {created.stdout[-300:]}")

    def stop(self) -> None:
        for pid in self._pids():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            wait_for(functools.partial(_pid_dead, pid), 20, f"redis node (pid {pid}) to stop")
        for pid_file in self.home.glob("node-*/pid"):
            pid_file.unlink()
