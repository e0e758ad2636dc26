"""``tally status``: one screen with the health of the stack and the flow of events."""

from __future__ import annotations

from typing import Any

import psycopg
from rich.console import Group
from rich.table import Table

from tally import stack
from tally.settings import Settings


def _pipeline(settings: Settings) -> dict[str, Any]:
    """Head, outbox backlog, per-projection checkpoints and parked events, from PostgreSQL."""
    with psycopg.connect(settings.pg_dsn, connect_timeout=2) as conn:
        head = conn.execute("SELECT position FROM event_head").fetchone()
        outbox = conn.execute(
            "SELECT count(*), extract(epoch FROM now() - min(e.recorded_at))"
            " FROM outbox o JOIN events e ON e.position = o.position"
        ).fetchone()
        checkpoints = conn.execute(
            "SELECT projection, max(last_position) FROM projection_partitions GROUP BY 1"
        ).fetchall()
        parked = conn.execute(
            "SELECT projection, count(*) FROM parked_events GROUP BY 1"
        ).fetchall()
    return {
        "head": int(head[0]) if head else 0,
        "outbox": int(outbox[0]) if outbox else 0,
        "outbox_age": float(outbox[1] or 0) if outbox else 0.0,
        "checkpoints": {name: int(pos) for name, pos in checkpoints},
        "parked": {name: int(n) for name, n in parked},
    }


def render(settings: Settings) -> Group:
    """The status screen (never raises: what cannot be read says so)."""
    servers = Table("server", "port", "state", title="local stack")
    for server in stack.stack_status(settings):
        state = "[green]up" if server.running else f"[red]{server.detail}"
        servers.add_row(server.name, str(server.port), state)
    flow = Table("", "value", title="events")
    projections = Table(
        "projection", "checkpoint", "lag (events)", "parked (DLQ)", title="projections"
    )
    try:
        facts = _pipeline(settings)
    except psycopg.Error as exc:
        flow.add_row("[red]event store", f"unreachable: {exc.__class__.__name__}")
        return Group(servers, flow)
    flow.add_row("head position", f"{facts['head']:,}")
    flow.add_row("outbox backlog", f"{facts['outbox']:,} (oldest {facts['outbox_age']:.1f} s)")
    for name in ("redis", "comments", "votes"):
        checkpoint = facts["checkpoints"].get(name)
        if checkpoint is None:
            projections.add_row(name, "-", "[yellow]not started", str(facts["parked"].get(name, 0)))
            continue
        lag = max(0, facts["head"] - checkpoint)
        colour = "green" if lag < 1000 else "yellow" if lag < 100_000 else "red"
        parked = facts["parked"].get(name, 0)
        projections.add_row(
            name, f"{checkpoint:,}", f"[{colour}]{lag:,}", f"[red]{parked}" if parked else "0"
        )
    return Group(servers, flow, projections)
