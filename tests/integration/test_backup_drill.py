"""The restore drill, as an operator runs it: back up the log with pgBackRest, keep writing,
restore into a fresh data directory (to a point in time, and to the end of the archive), then
rebuild every read model from the restored log and verify them.

Everything is real: the test stack's PostgreSQL archives its WAL through pgBackRest, the
restored server is a second PostgreSQL started from the restored directory.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest
from elasticsearch import AsyncElasticsearch
from psycopg_pool import AsyncConnectionPool

from kernel.settings import Settings
from tally.backup import Backups
from tally.stack import postgres_server
from tests.integration.test_status import free_port
from tests.pipeline import isolated, record_history, run_cli


@pytest.fixture
def backups(settings: Settings) -> Backups:
    return Backups(postgres_server(settings))


@pytest.fixture
def drill_dirs(backups: Backups) -> Iterator[list[Path]]:
    """Restore targets the server's user can enter; stopped and removed afterwards."""
    made: list[Path] = []
    yield made
    for target in made:
        backups.stop_restored(target)
        shutil.rmtree(target.parent, ignore_errors=True)


def new_target(backups: Backups, made: list[Path]) -> Path:
    target = backups.postgres.runtime / f"drill-{uuid.uuid4().hex[:8]}" / "data"
    target.parent.mkdir(parents=True)
    backups.postgres.hand_over(target.parent)
    made.append(target)
    return target


@pytest.fixture
async def own_indices(settings: Settings) -> AsyncIterator[Settings]:
    tag = uuid.uuid4().hex[:8]
    config = isolated(
        settings, es_comments_alias=f"test-drill-c-{tag}", es_votes_alias=f"test-drill-v-{tag}"
    )
    yield config
    async with AsyncElasticsearch(settings.es_url) as es:
        for index in await es.indices.get(index=f"test-drill-*-{tag}*"):
            await es.indices.delete(index=index)


def head_of(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT coalesce(max(position), 0) FROM events").fetchone()
    return int(row[0]) if row else 0


def restored_dsn(output: str) -> str:
    [line] = [x for x in output.splitlines() if x.startswith("TALLY_PG_DSN=")]
    return line.removeprefix("TALLY_PG_DSN=")


async def test_backup_then_point_in_time_restore_then_replay_and_verify(
    settings: Settings,
    apool: AsyncConnectionPool[Any],
    backups: Backups,
    drill_dirs: list[Path],
    own_indices: Settings,
) -> None:
    before = await record_history(apool, 300, seed=21)
    backed_up = await run_cli(settings, "backup")
    assert backed_up.returncode == 0, backed_up.stdout + backed_up.stderr
    listed = await run_cli(settings, "backup", "--list", "--json")
    labels = [b["label"] for b in msgspec.json.decode(listed.stdout)]
    assert labels and labels[-1].endswith("F"), listed.stdout
    # pgBackRest keeps a backup's stop time in whole seconds and restores to a time only from a
    # backup that stopped before it: a moment within the same second would find no backup.
    await asyncio.sleep(1.5)

    # After the backup: these exist only in the archived WAL.
    after = await record_history(apool, 200, seed=22)
    async with apool.connection() as conn:
        row = await (await conn.execute("SELECT now()")).fetchone()
    assert row is not None
    moment = row[0].isoformat(sep=" ")
    late = await record_history(apool, 100, seed=23)
    assert before[-1].position < after[-1].position < late[-1].position

    target = new_target(backups, drill_dirs)
    restored = await run_cli(
        settings, "restore", "--to", str(target), "--port", str(free_port()), "--time", moment
    )
    assert restored.returncode == 0, restored.stdout + restored.stderr
    dsn = restored_dsn(restored.stdout)
    # Up to the moment: what the backup had and what came after it, but nothing later.
    assert head_of(dsn) == after[-1].position
    print(f"point-in-time restore: head {head_of(dsn)} (live head {late[-1].position})")

    on_restored = msgspec.structs.replace(own_indices, pg_dsn=dsn)
    replayed = await run_cli(on_restored, "replay", "--projection", "all")
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    verified = await run_cli(on_restored, "verify", "--projection", "all", "--wait", "5")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    print(verified.stdout)

    # To the end of the archive: everything committed is there.
    whole = new_target(backups, drill_dirs)
    restored = await run_cli(settings, "restore", "--to", str(whole), "--port", str(free_port()))
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert head_of(restored_dsn(restored.stdout)) == late[-1].position


async def test_restoring_into_a_used_directory_is_refused(
    settings: Settings, backups: Backups, drill_dirs: list[Path]
) -> None:
    target = new_target(backups, drill_dirs)
    target.mkdir()
    (target / "something").write_text("precious")
    done = await run_cli(settings, "restore", "--to", str(target), "--port", str(free_port()))
    assert done.returncode == 1
    assert "is not empty: restore into a new directory" in done.stdout + done.stderr
    assert (target / "something").read_text() == "precious"
