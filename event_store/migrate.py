"""Versioned SQL migrations, applied once each and recorded in ``schema_migrations``."""

from __future__ import annotations

from importlib import resources

import psycopg
from psycopg import sql

MIGRATIONS = resources.files("event_store") / "migrations"

# Empties the store and everything derived from it in PostgreSQL (tests and benchmarks only).
EMPTY_EVERYTHING = (
    "TRUNCATE events, outbox, comments, votes, idempotency_keys, relay_partitions,"
    " projection_partitions, projection_epochs, parked_events, replays;"
    " UPDATE event_head SET position = 0; UPDATE relay_epoch SET epoch = 0, partitions = 0;"
    " UPDATE relay_lease SET holder = '', token = 0, expires_at = '-infinity'"
)


def migration_files() -> list[tuple[str, str]]:
    """(version, SQL) of every migration shipped with the code, in order."""
    files = sorted(
        (f for f in MIGRATIONS.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name
    )
    return [(f.name.removesuffix(".sql"), f.read_text()) for f in files]


async def ensure_database(dsn: str) -> bool:
    """Create the DSN's database if it does not exist yet; True when it was created."""
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    name = str(info.get("dbname") or "postgres")
    admin = psycopg.conninfo.make_conninfo(dsn, dbname="postgres")
    async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as conn:
        cur = await conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        if await cur.fetchone():
            return False
        await conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return True


async def migrate(dsn: str) -> list[str]:
    """Apply every pending migration in one transaction each; return the versions applied."""
    applied: list[str] = []
    async with await psycopg.AsyncConnection.connect(dsn) as conn, conn.transaction():
        # Two processes migrating at once wait for each other instead of racing.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('tally-migrate'))")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        cur = await conn.execute("SELECT version FROM schema_migrations")
        done = {row[0] for row in await cur.fetchall()}
        for version, script in migration_files():
            if version in done:
                continue
            await conn.execute(script.encode())
            await conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
            applied.append(version)
    return applied
