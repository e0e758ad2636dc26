"""What every server of the local stack shares: the ``Server`` life cycle (install, launch,
wait until it answers, stop), process helpers and Debian package installs.

Each server records the pid it started in ``<data-dir>/<folder>/pid``; ``down`` stops only those.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from kernel.settings import Settings


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


def port_of(url: str, default: int) -> int:
    """The port of ``url`` (or of ``host:port``), ``default`` when it names none."""
    return urlsplit(url if "://" in url else f"tcp://{url}").port or default


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex((host, port)) == 0


def pid_alive(pid: int) -> bool:
    """Does process ``pid`` run (and is it not a zombie)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return not Path(f"/proc/{pid}/status").read_text().count("State:\tZ")
    except FileNotFoundError:
        return False


def apt_install(*packages: str) -> None:
    """Install Debian ``packages`` (only what they need), or say what to install."""
    names = " ".join(packages)
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise StackError(f"missing: install the Debian package(s) {names}")
    print(f"installing {names} (apt-get)...", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
    # Only what the package needs (docker-compose would otherwise bring a Docker engine).
    done = subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
        env=env,
        check=False,
    )
    if done.returncode != 0:
        raise StackError(f"apt-get install {names} failed (see its output above)")


def ensure_tool(binary: str, package: str) -> str:
    """``binary``'s path, installing the Debian ``package`` first when it is missing."""
    if not shutil.which(binary):
        apt_install(package)
    path = shutil.which(binary)
    if path is None:
        raise StackError(f"{binary} is not on PATH after installing {package}")
    return path


def ensure_browser() -> str:
    """Debian's ``chromium`` for the browser tests (installed when missing); its path.

    Never a downloaded browser: Playwright drives this one.
    """
    return ensure_tool("chromium", "chromium")


def ensure_compose_cli() -> str:
    """Debian's ``docker-compose``, which checks compose/docker-compose.yml (``config``)
    without a Docker engine; its path."""
    return ensure_tool("docker-compose", "docker-compose")


def start_process(
    argv: list[str], log_file: Path, cwd: Path, pid_file: Path, user: str | None = None
) -> int:
    """Start ``argv`` in its own session, logging to ``log_file``; record and return its pid."""
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
    return proc.pid


def wait_for(check: Callable[[], bool], seconds: float, what: str) -> None:
    """Poll ``check`` until it holds; ``StackError`` naming ``what`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise StackError(f"timed out after {seconds:.0f} s waiting for {what}")


def stop_process(pid: int, what: str, grace: float = 60) -> None:
    """SIGTERM ``pid``'s process group, SIGKILL it if it is still there after ``grace``."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    try:
        wait_for(lambda: not pid_alive(pid), grace, f"{what} to stop")
    except StackError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        wait_for(lambda: not pid_alive(pid), 10, f"{what} to die")


def read_pid(pid_file: Path) -> int | None:
    """The pid in ``pid_file`` if that process still runs."""
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if pid_alive(pid) else None


class Server:
    """One private server of the stack (possibly several processes, like a cluster)."""

    name = ""
    folder = ""  # under the data directory; the name by default
    start_seconds = 90.0

    def __init__(self, settings: Settings, port: int) -> None:
        self.settings = settings
        self.port = port
        self.home = settings.data_path / (self.folder or self.name)

    @property
    def pid_file(self) -> Path:
        return self.home / "pid"

    @property
    def log_file(self) -> Path:
        return self.home / f"{self.name}.log"

    @property
    def ports(self) -> list[int]:
        """The ports a start needs free (every port this server listens on)."""
        return [self.port]

    def pid(self) -> int | None:
        """The pid this stack started, if that process still runs."""
        return read_pid(self.pid_file)

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
        if pid is not None:
            stop_process(pid, self.name)
        self.pid_file.unlink(missing_ok=True)

    def up(self) -> str:
        """Start unless running; wait until it answers. Returns what happened."""
        if self.pid() is not None and self.answers():
            return "already running"
        if self.pid() is None:
            taken = [port for port in self.ports if port_open(port)]
            if taken:
                raise StackError(
                    f"{self.name}: port {taken[0]} is taken by another process; stop it or"
                    f" point the TALLY_* setting for {self.name} at a free port"
                )
            self.install()
            self.home.mkdir(parents=True, exist_ok=True)
            self.launch()
        wait_for(
            self.answers,
            self.start_seconds,
            f"{self.name} on port {self.port} (log: {self.log_file})",
        )
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

    def spawn(self, argv: list[str], user: str | None = None) -> int:
        """Start ``argv`` as this server's process, logging to its log file."""
        return start_process(argv, self.log_file, self.home, self.pid_file, user)
