"""The production compose stack: it parses, has every part, and watches metrics that exist."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import REGISTRY

import command_api.app
import command_api.executor
import event_store.relay
import kernel.http_middleware
import projectors.rebuilder
import projectors.reconciler
import projectors.runner
import query_api.app
import query_api.live
from kernel.settings import Settings

COMPOSE = Path(__file__).resolve().parents[2] / "compose"
MODULES = (
    command_api.app,
    query_api.app,
    query_api.live,
    event_store.relay,
    projectors.runner,
    projectors.reconciler,
    projectors.rebuilder,
    command_api.executor,
)
NEEDED = {
    "postgres": "postgres:16",
    "redis": "redis:7",
    "kafka": "apache/kafka:",
    "elasticsearch": "elasticsearch:8",
    "prometheus": "prom/prometheus",
    "grafana": "grafana/grafana",
    "jaeger": "jaegertracing/",
}


def load(path: str) -> Any:
    return yaml.safe_load((COMPOSE / path).read_text())


def exported_metrics() -> set[str]:
    """Every sample name the code registers (with ``_total``, ``_bucket``... as exposed)."""
    assert MODULES and kernel.http_middleware  # imported for their metrics
    return {name for name in REGISTRY._names_to_collectors if name.startswith("tally_")}


def referenced(text: str) -> set[str]:
    return set(re.findall(r"\btally_[a-z_]+", text))


def test_the_compose_file_has_every_part_of_the_design() -> None:
    services = load("docker-compose.yml")["services"]
    for name, image in NEEDED.items():
        assert image in services[name]["image"], name
    commands = {name: s.get("command") for name, s in services.items()}
    assert commands["migrate"] == ["migrate"]
    assert commands["command-api"][:2] == ["serve", "command-api"]
    assert commands["query-api"][:2] == ["serve", "query-api"]
    assert int(commands["command-api"][commands["command-api"].index("--workers") + 1]) > 1
    assert commands["relay"] == commands["relay-standby"] == ["relay"]
    projected = {p for c in commands.values() if c and c[0] == "project" for p in c[1:]}
    assert projected == {"redis", "comments", "votes"}
    tally_services = [s for s in services.values() if s.get("image") == "tally:latest"]
    assert all(s["build"]["dockerfile"] == "compose/Dockerfile" for s in tally_services)
    assert (COMPOSE / "Dockerfile").is_file()


def test_tally_services_are_configured_by_environment_only() -> None:
    services = load("docker-compose.yml")["services"]
    known = {f"TALLY_{f.upper()}" for f in Settings.__struct_fields__}
    for name, service in services.items():
        if service.get("image") != "tally:latest":
            continue
        env = service["environment"]
        assert set(env) <= known, (name, set(env) - known)
        assert "volumes" not in service, f"{name} mounts configuration files"
    dockerfile = (COMPOSE / "Dockerfile").read_text()
    assert set(re.findall(r"\bTALLY_[A-Z_]+", dockerfile)) <= known


def test_tally_services_send_traces_to_the_collector_in_the_stack() -> None:
    services = load("docker-compose.yml")["services"]
    for name, service in services.items():
        if service.get("image") != "tally:latest":
            continue
        env = service["environment"]
        assert env["TALLY_OTEL_EXPORTER"] == "otlp", name
        host = re.match(r"https?://([^:/]+)", env["TALLY_OTEL_ENDPOINT"])
        assert host and host.group(1) in services, (name, env["TALLY_OTEL_ENDPOINT"])


def test_prometheus_scrapes_every_tally_process_on_its_metrics_port() -> None:
    config = load("prometheus/prometheus.yml")
    targets = {
        (name, sd["port"])
        for job in config["scrape_configs"]
        for sd in job["dns_sd_configs"]
        for name in sd["names"]
    }
    defaults = Settings()
    assert ("command-api", defaults.command_api_metrics_port) in targets
    assert ("query-api", defaults.query_api_metrics_port) in targets
    # Never the public API ports.
    assert not {port for _, port in targets} & {
        defaults.command_api_port,
        defaults.query_api_port,
    }
    for relay in ("relay", "relay-standby"):
        assert (relay, defaults.relay_metrics_port) in targets
    for projector in ("projector-redis", "projector-elasticsearch"):
        assert (projector, defaults.projector_metrics_port) in targets


def test_the_dashboard_and_alerts_only_use_metrics_the_code_exports() -> None:
    exported = exported_metrics()
    dashboard = json.loads((COMPOSE / "grafana/dashboards/tally.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    rules = [r for g in load("prometheus/alerts.yml")["groups"] for r in g["rules"]]
    used = referenced(" ".join(exprs)) | referenced(" ".join(r["expr"] for r in rules))
    assert used, "nothing referenced"
    assert used <= exported, used - exported
    alerts = {r["alert"] for r in rules}
    assert {
        "ProjectionLagging",
        "OutboxOld",
        "DeadLetterGrowth",
        "ReadModelRepaired",
        "ReadModelRebuilding",
        "CommandsShed",
    } <= alerts
    titles = " ".join(p["title"] for p in dashboard["panels"]).lower()
    for topic in ("per second", "latency", "lag", "outbox"):
        assert topic in titles
