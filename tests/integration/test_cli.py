"""The ``tally`` command as an operator meets it: help, version, status, events, the DLQ and
unreachable stores, run as real processes against the test stack."""

from __future__ import annotations

import json
from typing import Any

import msgspec
from psycopg_pool import AsyncConnectionPool

from kernel.settings import Settings
from tally.cli import build_parser
from tests.integration.test_status import free_port, nothing_listening
from tests.pipeline import record_history, redis_server_name, run_cli


def test_every_subcommand_has_a_description_and_examples() -> None:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert {"status", "events", "dlq", "verify", "replay", "stack"} <= set(commands)
    for name, command in commands.items():
        text = command.format_help()
        assert command.description and len(command.description) > 40, name
        assert f"examples:\n  tally {name}" in text or "examples:\n  TALLY_" in text, text


async def test_version_and_help_exit_zero(settings: Settings) -> None:
    version = await run_cli(settings, "--version")
    assert version.returncode == 0 and version.stdout.startswith("tally 0."), version
    helped = await run_cli(settings, "dlq", "--help")
    assert helped.returncode == 0
    assert "tally dlq skip --projection redis --position" in helped.stdout


async def test_an_unreachable_store_is_one_line_and_a_nonzero_exit(settings: Settings) -> None:
    closed = free_port()
    down = msgspec.structs.replace(
        settings,
        pg_dsn=f"postgresql://postgres@127.0.0.1:{closed}/tally",
        pg_connect_timeout_seconds=1,
    )
    for argv in (("migrate",), ("events", "--comment", "x"), ("dlq", "list")):
        done = await run_cli(down, *argv, kill_after=60)
        assert done.returncode == 1, (argv, done)
        assert "Traceback" not in done.stderr, done.stderr
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("cannot reach PostgreSQL at 127.0.0.1:"), (
            argv,
            done.stderr,
        )
    redis_down = msgspec.structs.replace(settings, redis_url=f"redis://127.0.0.1:{closed}/0")
    done = await run_cli(redis_down, "verify", "--projection", "redis", "--wait", "1")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"cannot reach Redis at 127.0.0.1:{closed}" in done.stderr, done.stderr
    es_down = msgspec.structs.replace(settings, es_url=f"http://127.0.0.1:{closed}")
    done = await run_cli(es_down, "verify", "--projection", "comments", "--wait", "1")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"cannot reach Elasticsearch at http://127.0.0.1:{closed}" in done.stderr, done.stderr


async def test_status_json_says_what_is_unhealthy_and_exits_one(
    settings: Settings, apool: AsyncConnectionPool[Any]
) -> None:
    await record_history(apool, 20, seed=3)
    done = await run_cli(nothing_listening(settings), "status", "--json")
    assert done.returncode == 1, done
    facts = json.loads(done.stdout)
    assert facts["healthy"] is False
    assert facts["event_store"]["head"] > 0
    assert {s["name"] for s in facts["services"] if not s["up"]} == {
        "command API",
        "query API",
        "relay",
        "projectors",
    }
    assert any(p.startswith("relay is down") for p in facts["problems"])
    assert {s["name"] for s in facts["stack"] if s["running"]} == {
        "postgres",
        redis_server_name(settings),
        "kafka",
        "opensearch",
        "search-bridge",
    }


async def test_events_prints_one_comments_history_in_order(
    settings: Settings, apool: AsyncConnectionPool[Any]
) -> None:
    history = await record_history(apool, 60, seed=5)
    comment = str(history[-1].event.comment_id)
    expected = [e.position for e in history if str(e.event.comment_id) == comment]
    done = await run_cli(settings, "events", "--comment", comment, "--json")
    assert done.returncode == 0, done
    printed = [json.loads(line) for line in done.stdout.splitlines()]
    assert [p["position"] for p in printed] == expected
    assert all(p["event"]["comment_id"] == comment for p in printed)
    table = await run_cli(settings, "events", "--comment", comment)
    assert table.returncode == 0 and f"comment {comment}" in table.stdout
    missing = await run_cli(settings, "events", "--comment", "no-such-comment")
    assert missing.returncode == 1 and "no events for comment no-such-comment" in missing.stderr


async def test_dlq_show_then_skip_a_parked_event(
    settings: Settings, apool: AsyncConnectionPool[Any]
) -> None:
    history = await record_history(apool, 10, seed=9)
    parked = history[3]
    async with apool.connection() as conn:
        await conn.execute(
            "INSERT INTO parked_events (projection, position, comment_id, error)"
            " VALUES ('redis', %s, %s, 'boom')",
            (parked.position, str(parked.event.comment_id)),
        )
    shown = await run_cli(
        settings, "dlq", "show", "--projection", "redis", "--position", str(parked.position)
    )
    assert shown.returncode == 0, shown
    found = json.loads(shown.stdout)
    assert found["error"] == "boom"
    assert found["envelope"]["position"] == parked.position
    assert found["envelope"]["event"]["comment_id"] == str(parked.event.comment_id)
    skipped = await run_cli(
        settings, "dlq", "skip", "--projection", "redis", "--position", str(parked.position)
    )
    assert skipped.returncode == 0 and "skipped event" in skipped.stderr, skipped
    async with apool.connection() as conn:
        left = await (await conn.execute("SELECT count(*) FROM parked_events")).fetchone()
    assert left == (0,)
    again = await run_cli(
        settings, "dlq", "skip", "--projection", "redis", "--position", str(parked.position)
    )
    assert again.returncode == 1 and "has no parked event" in again.stderr
    incomplete = await run_cli(settings, "dlq", "show", "--projection", "redis")
    assert incomplete.returncode == 2 and "needs --projection and --position" in incomplete.stderr


async def test_the_event_store_dsn_can_come_from_a_file(settings: Settings, tmp_path: Any) -> None:
    dsn = tmp_path / "pg_dsn"
    dsn.write_text(settings.pg_dsn + "\n")
    from_file: dict[str, str | None] = {"TALLY_PG_DSN": None, "TALLY_PG_DSN_FILE": str(dsn)}
    done = await run_cli(settings, "migrate", env=from_file)
    assert done.returncode == 0 and "migrations applied" in done.stderr, done
    both = await run_cli(settings, "migrate", env={"TALLY_PG_DSN_FILE": str(dsn)})
    assert both.returncode == 2
    assert "TALLY_PG_DSN and TALLY_PG_DSN_FILE are both set" in both.stderr
