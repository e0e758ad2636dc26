"""``tally status``: one screen with the health of the stack and the flow of events."""

from __future__ import annotations

import urllib.request
from typing import Any

import psycopg
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Group
from rich.table import Table

from kernel.settings import Settings
from projectors.positions import LOW_WATER_MARKS
from tally import stack


def _pipeline(settings: Settings) -> dict[str, Any]:
    """Head, outbox backlog, per-projection low-water marks and parked events, from PostgreSQL."""
    with psycopg.connect(settings.pg_dsn, connect_timeout=2) as conn:
        head = conn.execute("SELECT position FROM event_head").fetchone()
        outbox = conn.execute(
            "SELECT count(*), extract(epoch FROM now() - min(e.recorded_at))"
            " FROM outbox o JOIN events e ON e.position = o.position"
        ).fetchone()
        marks = conn.execute(LOW_WATER_MARKS).fetchall()
        parked = conn.execute(
            "SELECT projection, count(*) FROM parked_events GROUP BY 1"
        ).fetchall()
    return {
        "head": int(head[0]) if head else 0,
        "outbox": int(outbox[0]) if outbox else 0,
        "outbox_age": float(outbox[1] or 0) if outbox else 0.0,
        "low_water": {name: int(pos) for name, pos in marks},
        "parked": {name: int(n) for name, n in parked},
    }


def scrape(url: str, timeout: float = 1) -> dict[tuple[str, str], float]:
    """Every sample a ``/metrics`` URL serves, by (name, ``projection`` label or "").

    Raises ``OSError`` (``URLError`` included) when nothing answers.
    """
    with urllib.request.urlopen(url, timeout=timeout) as reply:
        text = reply.read().decode()
    return {
        (sample.name, sample.labels.get("projection", "")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


class _Service:
    """One Tally process, as seen from its health or metrics endpoint."""

    def __init__(self, name: str, url: str) -> None:
        self.name = name
        self.url = url
        self.error = ""
        self.samples: dict[tuple[str, str], float] = {}  # (metric, projection) -> value

    def probe(self) -> _Service:
        try:
            if self.url.endswith("/metrics"):
                self.samples = scrape(self.url)
            else:
                urllib.request.urlopen(self.url, timeout=1).close()
        except OSError as exc:  # URLError is one
            reason = getattr(exc, "reason", exc)
            self.error = str(reason) or reason.__class__.__name__
        return self

    @property
    def state(self) -> str:
        if self.error:
            return f"[red]down: {self.error}"
        if self.name == "relay":
            leader = self.samples.get(("tally_relay_leader", ""), 0)
            return "[green]up, leader" if leader else "[yellow]up, standby"
        return "[green]up"


def _repairs(projector: _Service, name: str) -> str:
    """What the reconciler repaired since the projector started, and a rebuild under way."""
    repaired = projector.samples.get(("tally_reconcile_repairs_total", name))
    rebuilding = projector.samples.get(("tally_projection_rebuilding", name))
    if rebuilding:
        return "[red]rebuilding"
    if repaired is None:
        return "-"
    return f"[yellow]{repaired:,.0f}" if repaired else "0"


def service_urls(settings: Settings) -> tuple[str, str, str, str]:
    """Where to reach the command API, the query API, and the relay's and projectors' metrics."""

    def local(host: str) -> str:
        return host.replace("0.0.0.0", "127.0.0.1")

    metrics = local(settings.metrics_host)
    return (
        f"http://{local(settings.command_api_host)}:{settings.command_api_port}",
        f"http://{local(settings.query_api_host)}:{settings.query_api_port}",
        f"http://{metrics}:{settings.relay_metrics_port}/metrics",
        f"http://{metrics}:{settings.projector_metrics_port}/metrics",
    )


def _services(settings: Settings) -> list[_Service]:
    """Probe the APIs' /health and the relay's and projectors' metrics ports."""
    command, query, relay, projectors = service_urls(settings)
    return [
        _Service("command API", f"{command}/health").probe(),
        _Service("query API", f"{query}/health").probe(),
        _Service("relay", relay).probe(),
        _Service("projectors", projectors).probe(),
    ]


def render(settings: Settings) -> Group:
    """The status screen (never raises: what cannot be read says so)."""
    servers = Table("server", "port", "state", title="local stack")
    for server in stack.stack_status(settings):
        state = "[green]up" if server.running else f"[red]{server.detail}"
        servers.add_row(server.name, str(server.port), state)
    services = Table("process", "address", "state", title="tally")
    probed = _services(settings)
    for service in probed:
        services.add_row(service.name, service.url.rsplit("/", 1)[0], service.state)
    projector = probed[-1]
    flow = Table("", "value", title="events")
    projections = Table(
        "projection",
        "low-water mark",
        "lag (events)",
        "lag (s)",
        "applied",
        "parked (DLQ)",
        "repaired",
        title="projections",
    )
    try:
        facts = _pipeline(settings)
    except psycopg.Error as exc:
        flow.add_row("[red]event store", f"unreachable: {exc.__class__.__name__}")
        return Group(servers, services, flow)
    flow.add_row("head position", f"{facts['head']:,}")
    flow.add_row("outbox backlog", f"{facts['outbox']:,} (oldest {facts['outbox_age']:.1f} s)")
    for name in ("redis", "comments", "votes"):
        parked = facts["parked"].get(name, 0)
        lag_s = projector.samples.get(("tally_projection_lag_seconds", name))
        applied = projector.samples.get(("tally_projection_applied_total", name))
        live = (
            "-" if lag_s is None else f"{lag_s:.1f}",
            "-" if applied is None else f"{applied:,.0f}",
            f"[red]{parked}" if parked else "0",
            _repairs(projector, name),
        )
        mark = facts["low_water"].get(name)
        if mark is None:
            nothing_yet = facts["head"] == 0 and not projector.error
            projections.add_row(
                name, "-", "[green]0" if nothing_yet else "[yellow]not started", *live
            )
            continue
        lag = max(0, facts["head"] - mark)
        colour = "green" if lag < 1000 else "yellow" if lag < 100_000 else "red"
        projections.add_row(name, f"{mark:,}", f"[{colour}]{lag:,}", *live)
    return Group(servers, services, flow, projections)
