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


def collect(settings: Settings) -> dict[str, Any]:
    """Everything ``tally status`` knows, as plain data (never raises: what cannot be read
    says so), with ``healthy`` and the ``problems`` that make it false."""
    probed = _services(settings)
    projector = probed[-1]
    facts: dict[str, Any] = {
        "stack": [
            {"name": s.name, "port": s.port, "running": s.running, "detail": s.detail}
            for s in stack.stack_status(settings)
        ]
        if settings.local
        else [],
        "services": [
            {
                "name": service.name,
                "url": service.url.rsplit("/", 1)[0],
                "up": not service.error,
                "error": service.error or None,
                "leader": bool(service.samples.get(("tally_relay_leader", ""), 0))
                if service.name == "relay" and not service.error
                else None,
            }
            for service in probed
        ],
        "event_store": None,
        "projections": {},
    }
    problems = [f"{s['name']} is down: {s['error']}" for s in facts["services"] if not s["up"]]
    problems += [f"{s['name']} is not running" for s in facts["stack"] if not s["running"]]
    try:
        pipeline = _pipeline(settings)
    except psycopg.Error as exc:
        facts["event_store"] = {"error": f"unreachable: {exc.__class__.__name__}"}
        problems.append("the event store is unreachable")
        return facts | {"healthy": False, "problems": problems}
    facts["event_store"] = {k: pipeline[k] for k in ("head", "outbox", "outbox_age")}
    for name in ("redis", "comments", "votes"):
        mark = pipeline["low_water"].get(name)
        parked = pipeline["parked"].get(name, 0)
        samples = {
            key: projector.samples.get((metric, name))
            for key, metric in (
                ("lag_seconds", "tally_projection_lag_seconds"),
                ("applied", "tally_projection_applied_total"),
                ("repaired", "tally_reconcile_repairs_total"),
                ("rebuilding", "tally_projection_rebuilding"),
            )
        }
        facts["projections"][name] = {
            "low_water": mark,
            "lag": None if mark is None else max(0, pipeline["head"] - mark),
            "parked": parked,
            **samples,
            "rebuilding": bool(samples["rebuilding"]),
        }
        if parked:
            problems.append(f"{name}: {parked} parked event(s) (tally dlq list)")
        if samples["rebuilding"]:
            problems.append(f"{name}: rebuilding")
        if mark is None and pipeline["head"]:
            problems.append(f"{name}: not started")
    return facts | {"healthy": not problems, "problems": problems}


def render(facts: dict[str, Any]) -> Group:
    """The status screen for ``collect``'s facts."""
    servers = Table("server", "port", "state", title="local stack")
    for server in facts["stack"]:
        state = "[green]up" if server["running"] else f"[red]{server['detail']}"
        servers.add_row(server["name"], str(server["port"]), state)
    services = Table("process", "address", "state", title="tally")
    for service in facts["services"]:
        if not service["up"]:
            state = f"[red]down: {service['error']}"
        elif service["leader"] is not None:
            state = "[green]up, leader" if service["leader"] else "[yellow]up, standby"
        else:
            state = "[green]up"
        services.add_row(service["name"], service["url"], state)
    verdict = Table("", title="health")
    for problem in facts["problems"]:
        verdict.add_row(f"[red]{problem}")
    if facts["healthy"]:
        verdict.add_row("[green]healthy")
    store = facts["event_store"]
    flow = Table("", "value", title="events")
    if "error" in store:
        flow.add_row("[red]event store", store["error"])
        return Group(servers, services, flow, verdict)
    flow.add_row("head position", f"{store['head']:,}")
    flow.add_row("outbox backlog", f"{store['outbox']:,} (oldest {store['outbox_age']:.1f} s)")
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
    for name, p in facts["projections"].items():
        live = (
            "-" if p["lag_seconds"] is None else f"{p['lag_seconds']:.1f}",
            "-" if p["applied"] is None else f"{p['applied']:,.0f}",
            f"[red]{p['parked']}" if p["parked"] else "0",
            "[red]rebuilding"
            if p["rebuilding"]
            else "-"
            if p["repaired"] is None
            else f"[yellow]{p['repaired']:,.0f}"
            if p["repaired"]
            else "0",
        )
        if p["low_water"] is None:
            started = "[green]0" if store["head"] == 0 else "[yellow]not started"
            projections.add_row(name, "-", started, *live)
            continue
        colour = "green" if p["lag"] < 1000 else "yellow" if p["lag"] < 100_000 else "red"
        projections.add_row(name, f"{p['low_water']:,}", f"[{colour}]{p['lag']:,}", *live)
    return Group(servers, services, flow, projections, verdict)
