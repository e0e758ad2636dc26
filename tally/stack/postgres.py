"""The local stack's PostgreSQL: a private cluster from Debian's ``postgresql`` package."""

from __future__ import annotations

import glob
import hashlib
import os
import pwd
import shutil
import subprocess
from pathlib import Path

import psycopg

from tally.stack.base import Server, StackError, apt_install, port_open

BACKUP_STANZA = "tally"  # pgBackRest's name for this cluster
# A server restored from a backup needs at least these (max_connections above all).
PG_TUNING = (
    "-c listen_addresses=127.0.0.1 -c max_connections=200 -c shared_buffers=256MB"
    " -c synchronous_commit=on"
)


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
            apt_install("postgresql")
        if not shutil.which("pgbackrest"):  # backups and WAL archiving (tally.backup)
            apt_install("pgbackrest")

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
