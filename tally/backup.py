"""Backups of the local stack's PostgreSQL with pgBackRest, and restores into a fresh data
directory, to the end of the archive or to a point in time.

The event log is the only source of truth, so it is what is backed up: every read model is
rebuilt from a restored log with ``tally replay`` and checked with ``tally verify``. The server
archives each WAL segment through ``Postgres.archiver`` once ``configure`` has written the
configuration, so a restore can reach any moment after the first backup.

Production runs the same tool against its own repository (S3, GCS, Azure, or a volume): see
docs/operations.md, "Backups and point-in-time restore", and the ``backup`` service in compose.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import psycopg

from tally.stack import BACKUP_STANZA, PG_TUNING, Postgres, StackError

BackupKind = Literal["full", "diff", "incr"]


@dataclass(frozen=True)
class Restored:
    """A server started from a restored data directory."""

    data: Path
    port: int
    log_file: Path

    def dsn(self, database: str) -> str:
        """The DSN of ``database`` on the restored server."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"


class Backups:
    """pgBackRest for one local PostgreSQL: its repository sits beside the server's data."""

    def __init__(self, postgres: Postgres) -> None:
        self.postgres = postgres

    @property
    def repository(self) -> Path:
        """Where backups and archived WAL are kept."""
        return self.postgres.runtime / "backups"

    def configure(self) -> None:
        """Write pgBackRest's configuration (this also starts WAL archiving) and create the
        stanza; both are no-ops when done before."""
        runtime = self.postgres.runtime
        lines = [
            "[global]",
            f"repo1-path={self.repository}",
            "repo1-retention-full=2",  # older backups, and the WAL only they need, expire
            "compress-type=lz4",
            "start-fast=y",  # checkpoint at once instead of waiting for the next one
            f"log-path={runtime / 'backup-log'}",
            f"lock-path={runtime / 'backup-lock'}",
            "log-level-console=warn",
            "log-level-file=info",
            "",
            f"[{BACKUP_STANZA}]",
            f"pg1-path={self.postgres.data}",
            f"pg1-port={self.postgres.port}",
            f"pg1-socket-path={runtime}",
            "pg1-user=postgres",
            "",
        ]
        config = self.postgres.backup_config
        config.write_text("\n".join(lines))
        self.postgres.hand_over(config)
        self._run("stanza-create")

    def backup(self, kind: BackupKind = "full") -> None:
        """Take a backup (pgBackRest checks that WAL archiving works first)."""
        self._require_archiving()
        self.configure()
        self._run("backup", f"--type={kind}")

    def list(self) -> list[dict[str, Any]]:
        """The backups in the repository, oldest first (pgBackRest's ``info``)."""
        if not self.postgres.backup_config.exists():
            return []
        stanzas = json.loads(self._run("info", "--output=json").stdout or "[]")
        return [b for stanza in stanzas for b in stanza.get("backup", [])]

    def restore(self, target: Path, port: int, until: str | None = None) -> Restored:
        """Restore the latest backup into ``target`` (a new, empty directory), replay archived
        WAL up to ``until`` (a timestamp with a time zone; the end of the archive when
        ``None``), and start a server on ``port`` from it."""
        if target.exists() and any(target.iterdir()):
            raise StackError(f"{target} is not empty: restore into a new directory")
        if not self.list():
            raise StackError("no backup to restore: run `tally backup` first")
        # Make sure what was committed a moment ago is in the archive, not only in pg_wal.
        with self._connect(self.postgres.port) as conn:
            conn.execute("SELECT pg_switch_wal()")
        self._run("check")
        target.mkdir(parents=True, exist_ok=True)
        target.chmod(0o700)
        self.postgres.hand_over(target)
        options = [f"--pg1-path={target}"]
        if until is not None:
            options += ["--type=time", f"--target={until}", "--target-action=promote"]
        self._run("restore", *options)
        restored = Restored(target, port, target.parent / f"{target.name}.log")
        self._start(restored)
        return restored

    def stop_restored(self, target: Path) -> None:
        """Stop the server running from a restored directory."""
        self.postgres.stop_cluster(target)

    def _start(self, restored: Restored) -> None:
        # Archiving off: a drill must not push its new timeline into the real repository.
        options = f"-p {restored.port} -k {restored.data.parent} {PG_TUNING} -c archive_mode=off"
        self.postgres.start_cluster(restored.data, restored.log_file, options, wait=120)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # until recovery is over and it takes writes
            with self._connect(restored.port) as conn:
                row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
            if row and not row[0]:
                return
            time.sleep(0.2)
        raise StackError(f"the restored server stayed in recovery ({restored.log_file})")

    def _require_archiving(self) -> None:
        with self._connect(self.postgres.port) as conn:
            row = conn.execute("SHOW archive_mode").fetchone()
        if not row or row[0] != "on":
            raise StackError(
                "WAL archiving is off in the running PostgreSQL (started before backups"
                " existed): restart it with `tally stack down && tally stack up`"
            )

    def _run(self, command: str, *options: str) -> subprocess.CompletedProcess[str]:
        done = self.postgres.as_owner(
            [
                "pgbackrest",
                f"--config={self.postgres.backup_config}",
                f"--stanza={BACKUP_STANZA}",
                *options,
                command,
            ]
        )
        if done.returncode != 0:
            reason = (done.stderr.strip() or done.stdout.strip()).splitlines()
            raise StackError(f"pgbackrest {command} failed: {reason[-1] if reason else '?'}")
        return done

    @staticmethod
    def _connect(port: int) -> psycopg.Connection[Any]:
        return psycopg.connect(
            host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True
        )
