"""``tally status`` shows the stack, the head, the backlog and each projection."""

from __future__ import annotations

import re
import socket
from typing import Any

import msgspec
from prometheus_client import start_http_server
from psycopg_pool import AsyncConnectionPool
from rich.console import Console

from event_store.relay import LEADER
from event_store.seed import SeedPlan, seed
from kernel.settings import Settings
from projectors.delivery import APPLIED
from projectors.runner import LAG_SECONDS
from tally.status import collect, render


async def test_status_shows_servers_head_backlog_and_projections(
    settings: Settings, clean_store: AsyncConnectionPool[Any]
) -> None:
    await seed(settings.pg_dsn, SeedPlan(events=300, comments=20, users=10))
    async with clean_store.connection() as conn:
        await conn.execute(
            "INSERT INTO projection_epochs VALUES ('redis', 1, 2);"
            " INSERT INTO projection_partitions VALUES ('redis', 0, 250), ('redis', 1, 280)"
        )
        await conn.execute(
            "INSERT INTO parked_events (projection, position, comment_id, error)"
            " VALUES ('votes', 7, 'c', 'boom')"
        )
    config = nothing_listening(settings)
    facts = collect(config)
    console = Console(record=True, width=120)
    console.print(render(facts))
    text = console.export_text()
    assert not facts["healthy"]
    assert "votes: 1 parked event(s) (tally dlq list)" in facts["problems"]
    assert "command API is down: [Errno 111] Connection refused" in facts["problems"], facts
    assert (facts["event_store"]["head"], facts["event_store"]["outbox"]) == (300, 300)
    assert facts["projections"]["redis"]["lag"] == 50
    for server in ("postgres", "redis", "kafka", "opensearch", "search-bridge"):
        assert server in text
    assert "head position  │ 300" in text
    assert "outbox backlog │ 300" in text
    assert re.search(r"redis +│ 250 +│ 50 ", text), text  # low-water mark 250, lag 50
    assert re.search(r"votes +│ - +│ not started +│ - +│ - +│ 1 +│ - ", text), text
    for process in ("command API", "query API", "relay", "projectors"):
        assert re.search(rf"{process} +│ http://127.0.0.1:\d+ +│ down", text), text


def nothing_listening(settings: Settings) -> Settings:
    """``settings`` with API and metrics ports where no Tally process listens (`make run`
    may use the default ones meanwhile)."""
    closed = [free_port() for _ in range(4)]
    return msgspec.structs.replace(
        settings,
        command_api_port=closed[0],
        query_api_port=closed[1],
        relay_metrics_port=closed[2],
        projector_metrics_port=closed[3],
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_status_reads_the_relay_and_projectors_from_their_metrics(
    settings: Settings, clean_store: AsyncConnectionPool[Any]
) -> None:
    server, thread = start_http_server(0, addr="127.0.0.1")  # this process's metrics
    port = server.server_address[1]
    try:
        LEADER.set(1)
        LAG_SECONDS.labels("comments").set(1.25)
        APPLIED.labels("comments").inc(0)
        config = msgspec.structs.replace(
            settings, relay_metrics_port=port, projector_metrics_port=port
        )
        facts = collect(config)
        console = Console(record=True, width=120)
        console.print(render(facts))
        text = console.export_text()
    finally:
        LEADER.set(0)
        server.shutdown()
        thread.join(5)
    assert re.search(r"relay +│ http://127.0.0.1:\d+ +│ up, leader", text), text
    assert re.search(r"projectors +│ http://127.0.0.1:\d+ +│ up ", text), text
    assert re.search(r"comments +│ - +│ 0 +│ 1.2 +│ \d+ +│ 0 +│ ", text), text
    relay = next(s for s in facts["services"] if s["name"] == "relay")
    assert relay["up"] and relay["leader"] is True
    assert facts["projections"]["comments"]["lag_seconds"] == 1.25
