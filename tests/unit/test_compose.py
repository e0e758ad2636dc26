"""The production compose stack: it parses, has every part, and watches metrics that exist."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
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
from projectors.es_indices import VOTES_ALIAS, VOTES_MAPPING
from tally.stack import BACKUP_STANZA

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
    "kafka-1": "apache/kafka:",
    "elasticsearch": "elasticsearch/elasticsearch:",
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


def referenced(text: str, prefix: str = "tally") -> set[str]:
    return set(re.findall(rf"\b{prefix}_[a-z_]+", text))


# Metric prefix of each store's exporter -> the Prometheus job that scrapes it.
EXPORTED_BY = {
    "pg": "postgres",
    "redis": "redis",
    "kafka": "kafka",
    "elasticsearch": "elasticsearch",
    "nginx": "nginx",
    "pgbackrest": "pgbackrest",
}
# Exporters ship as scratch images without a shell: Prometheus's `up` is their health.
EXPORTERS = {
    "postgres-exporter",
    "redis-exporter",
    "kafka-exporter",
    "elasticsearch-exporter",
    "lb-exporter",
    "backup-exporter",
}


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
        for sd in job.get("dns_sd_configs", [])
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


def services() -> dict[str, Any]:
    return dict(load("docker-compose.yml")["services"])


def test_scaled_apis_sit_behind_the_load_balancer_without_host_ports() -> None:
    found = services()
    for api, port in (("command-api", "8000"), ("query-api", "8001")):
        assert "ports" not in found[api], f"{api} publishes a host port: --scale would clash"
        assert found[api]["expose"] == [port]
    assert set(found["lb"]["ports"]) == {"8000:8000", "8001:8001"}
    conf = (COMPOSE / "nginx/nginx.conf").read_text()
    assert "resolver 127.0.0.11" in conf  # replicas added by --scale are found again
    servers = re.findall(r"listen (\d+);(.*?)\n  }", conf, flags=re.S)
    routes = {
        port: set(re.findall(r"set \$\w+ http://([\w-]+:\d+);", body)) for port, body in servers
    }
    assert routes["8000"] == {"command-api:8000"}
    assert routes["8001"] == {"query-api:8001"}
    live = re.search(r"location ~ \^/api/commentables/.*?/live\$ \{(.*?)\}", conf, flags=re.S)
    assert live and "proxy_buffering off" in live.group(1)  # SSE passes through at once
    assert re.search(r"client_max_body_size (\d+)k", conf).group(1) == str(  # type: ignore[union-attr]
        Settings().max_body_bytes // 1024
    )


def test_long_running_services_have_healthchecks_restart_policies_and_limits() -> None:
    for name, service in services().items():
        limits = service.get("deploy", {}).get("resources", {}).get("limits", {})
        assert {"cpus", "memory"} <= set(limits), f"{name} has no resource limits"
        if service.get("restart") == "no":
            continue  # a one-shot job (migrate, cluster init, Kibana import)
        assert service.get("restart") == "unless-stopped", name
        if name not in EXPORTERS:
            check = service.get("healthcheck", {}).get("test")
            assert check, f"{name} has no healthcheck"


def test_tally_processes_check_the_port_they_serve() -> None:
    found = services()
    defaults = Settings()
    expected = {
        "command-api": defaults.command_api_port,
        "query-api": defaults.query_api_port,
        "relay": defaults.relay_metrics_port,
        "relay-standby": defaults.relay_metrics_port,
        "projector-redis": defaults.projector_metrics_port,
        "projector-elasticsearch": defaults.projector_metrics_port,
    }
    for name, port in expected.items():
        assert f"http://127.0.0.1:{port}/" in " ".join(found[name]["healthcheck"]["test"]), name
    assert found["lb"]["depends_on"]["command-api"]["condition"] == "service_healthy"


def test_alerts_reach_alertmanager_and_a_receiver() -> None:
    found = services()
    prometheus = load("prometheus/prometheus.yml")
    [target] = prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert target.split(":")[0] == "alertmanager" and "alertmanager" in found
    manager = load("alertmanager/alertmanager.yml")
    receivers = {r["name"]: r for r in manager["receivers"]}
    assert manager["route"]["receiver"] in receivers
    for route in manager["route"].get("routes", []):
        assert route["receiver"] in receivers
    hooks = [h["url"] for r in receivers.values() for h in r.get("webhook_configs", [])]
    assert hooks and all(urlsplit(url).hostname in found for url in hooks)
    severities = {
        r["labels"]["severity"] for g in load("prometheus/alerts.yml")["groups"] for r in g["rules"]
    }
    assert "page" in severities  # the route that pages matches real alerts


def test_every_store_is_exported_scraped_charted_and_alerted_on() -> None:
    found = services()
    jobs = {job["job_name"]: job for job in load("prometheus/prometheus.yml")["scrape_configs"]}
    for job in EXPORTED_BY.values():
        [target] = jobs[job]["static_configs"][0]["targets"]
        assert target.split(":")[0] in found, job
    dashboard = json.loads((COMPOSE / "grafana/dashboards/tally.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    rules = " ".join(r["expr"] for g in load("prometheus/alerts.yml")["groups"] for r in g["rules"])
    for prefix in EXPORTED_BY:
        assert referenced(exprs, prefix), f"no panel for {prefix}"
    for prefix in ("pg", "redis", "elasticsearch", "kafka", "pgbackrest"):
        assert referenced(rules, prefix), f"no alert on {prefix}"
    # Nothing charted or alerted on that nobody exports.
    names = set(re.findall(r"\b([a-z]+)_[a-z_]+\{|\b([a-z]+)_[a-z_]+\[", exprs + " " + rules))
    prefixes = {a or b for a, b in names}
    assert prefixes <= {"tally", *EXPORTED_BY}, prefixes - {"tally", *EXPORTED_BY}


def test_kibana_gets_the_votes_data_view_and_a_dashboard_of_the_analyst_queries() -> None:
    found = services()
    assert "kibana" in found and found["kibana-setup"]["depends_on"]["kibana"]
    assert "file=@/kibana/tally.ndjson" in found["kibana-setup"]["command"]
    assert "127.0.0.1:9200:9200" in found["elasticsearch"]["ports"]
    lines = (COMPOSE / "kibana/tally.ndjson").read_text().splitlines()
    objects = {(o["type"], o["id"]): o for o in map(json.loads, lines)}
    [view] = [o for (kind, _), o in objects.items() if kind == "index-pattern"]
    assert view["attributes"]["title"] == VOTES_ALIAS
    fields = set(VOTES_MAPPING["properties"])
    assert view["attributes"]["timeFieldName"] in fields
    visualizations = [o for (kind, _), o in objects.items() if kind == "visualization"]
    for vis in visualizations:
        state = json.loads(vis["attributes"]["visState"])
        used = {a["params"]["field"] for a in state["aggs"] if "field" in a["params"]}
        assert used and used <= fields, (vis["id"], used - fields)
        assert [r["id"] for r in vis["references"]] == [view["id"]]
    grouped = {
        a["params"]["field"]
        for v in visualizations
        for a in json.loads(v["attributes"]["visState"])["aggs"]
        if a["type"] == "terms"
    }
    assert {"comment_author_id", "comment_id", "commentable_id"} <= grouped
    [board] = [o for (kind, _), o in objects.items() if kind == "dashboard"]
    panels = json.loads(board["attributes"]["panelsJSON"])
    refs = {r["name"]: (r["type"], r["id"]) for r in board["references"]}
    assert {refs[p["panelRefName"]] for p in panels} == {
        ("visualization", v["id"]) for v in visualizations
    }


def test_the_redis_cluster_profile_runs_three_masters_and_tally_can_use_them() -> None:
    found = services()
    nodes = [n for n in found if n.startswith("redis-node-")]
    assert len(nodes) == 3
    for node in nodes:
        assert found[node]["profiles"] == ["redis-cluster"]
        assert "--cluster-enabled" in found[node]["command"]
    init = " ".join(found["redis-cluster-init"]["command"])
    assert "--cluster create" in init and all(n in init for n in nodes)
    env = found["relay"]["environment"]
    assert env["TALLY_REDIS_MODE"].startswith("${TALLY_REDIS_MODE")


def test_postgres_archives_wal_to_pgbackrest_and_backups_are_scheduled() -> None:
    found = services()
    command = " ".join(found["postgres"]["command"])
    assert "archive_mode=on" in command
    assert f"archive_command=pgbackrest --stanza={BACKUP_STANZA} archive-push %p" in command
    config = (COMPOSE / "postgres/pgbackrest.conf").read_text()
    assert f"[{BACKUP_STANZA}]" in config and "repo1-retention-full=" in config
    repo = "pgbackrest-repo:/var/lib/pgbackrest"
    for name in ("postgres", "backup"):
        assert repo in found[name]["volumes"], name
    assert any(v.startswith(repo) for v in found["backup-exporter"]["volumes"])
    loop = (COMPOSE / "postgres/backup-loop.sh").read_text()
    assert f"--stanza={BACKUP_STANZA}" in loop and "--type=full backup" in loop
    assert found["backup"]["entrypoint"] == ["backup-loop"]


def test_the_image_holds_every_package_the_processes_import() -> None:
    dockerfile = (COMPOSE / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\w+) ", dockerfile, flags=re.M))
    packages = {
        "tally",
        "kernel",
        "schemas",
        "event_store",
        "command_api",
        "query_api",
        "projectors",
    }
    assert packages <= copied, packages - copied


def test_a_compose_cli_accepts_the_file_with_every_profile() -> None:
    cli = shutil.which("docker-compose")
    if cli is None:
        pytest.skip("no compose CLI here: `make test` installs Debian's docker-compose")
    env = {**os.environ, "TALLY_JWT_SECRET": "x" * 32}
    done = subprocess.run(
        [cli, "-f", str(COMPOSE / "docker-compose.yml"), "--profile", "redis-cluster", "config"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    rendered = yaml.safe_load(done.stdout)
    assert set(rendered["services"]) == set(services())


def _pinned_major(requirement: str) -> int:
    """The major a requirement such as ``elasticsearch[async]>=9.0,<10`` allows (one only)."""
    low = re.search(r">=\s*(\d+)", requirement)
    high = re.search(r"<\s*(\d+)", requirement)
    assert low and high and int(high.group(1)) == int(low.group(1)) + 1, requirement
    return int(low.group(1))


def test_the_search_client_is_pinned_to_the_major_of_compose_elasticsearch_and_kibana() -> None:
    pyproject = tomllib.loads((COMPOSE.parent / "pyproject.toml").read_text())
    [client] = [d for d in pyproject["project"]["dependencies"] if d.startswith("elasticsearch")]
    found = services()
    server = found["elasticsearch"]["image"].rsplit(":", 1)[1]
    kibana = found["kibana"]["image"].rsplit(":", 1)[1]
    assert kibana == server  # Kibana refuses an Elasticsearch of another version
    # A client of another major sends compatible-with=<its major>, which the server refuses.
    assert _pinned_major(client) == int(server.split(".")[0]), (client, server)


def test_compose_runs_the_kafka_version_the_tests_run_as_three_replicating_brokers() -> None:
    from tally.stack.java import FILES, pom_version

    tested = pom_version((FILES / "kafka.pom.xml").read_text(), "kafka.version")
    found = services()
    brokers = [found[f"kafka-{n}"] for n in (1, 2, 3)]
    assert {b["image"] for b in brokers} == {f"apache/kafka:{tested}"}
    voters = brokers[0]["environment"]["KAFKA_CONTROLLER_QUORUM_VOTERS"]
    assert voters == "1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093"
    assert [b["environment"]["KAFKA_NODE_ID"] for b in brokers] == [1, 2, 3]
    for broker in brokers:
        env = broker["environment"]
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == 3
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == 2
        assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == 3
    tally = found["relay"]["environment"]
    assert tally["TALLY_KAFKA_BOOTSTRAP"] == "kafka-1:9092,kafka-2:9092,kafka-3:9092"
    assert tally["TALLY_KAFKA_REPLICATION_FACTOR"] == "3"
    assert tally["TALLY_KAFKA_MIN_INSYNC_REPLICAS"] == "2"
    # The idempotent producer is on by default: compose does not turn it off.
    assert tally.get("TALLY_KAFKA_IDEMPOTENT_PRODUCER", "true") == "true"
    assert Settings().kafka_idempotent_producer


def test_redis_has_a_memory_ceiling_that_evicts_only_expiring_keys_and_an_alert_on_it() -> None:
    command = services()["redis"]["command"]
    assert command[command.index("--maxmemory-policy") + 1] == "volatile-lru"
    ceiling = command[command.index("--maxmemory") + 1]
    assert re.fullmatch(r"\$\{REDIS_MAXMEMORY:-\d+(mb|gb)\}", ceiling), ceiling
    limit = services()["redis"]["deploy"]["resources"]["limits"]["memory"]
    default_mb = int(re.search(r"(\d+)mb", ceiling).group(1))  # type: ignore[union-attr]
    assert default_mb < int(limit.removesuffix("G")) * 1024  # below the container's limit
    rules = {r["alert"]: r for g in load("prometheus/alerts.yml")["groups"] for r in g["rules"]}
    assert "redis_memory_max_bytes > 0" in rules["RedisMemoryHigh"]["expr"]  # can now fire
