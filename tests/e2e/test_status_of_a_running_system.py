"""``tally status --json`` on a running system: healthy (exit 0) until a process dies."""

from __future__ import annotations

import json
from typing import Any

from kernel.settings import Settings
from tests.e2e.conftest import running_system, start_process, stop_service
from tests.pipeline import isolated, run_cli

COMMAND_PORT, QUERY_PORT = 28140, 28141
RELAY_METRICS, PROJECTOR_METRICS = 29141, 29142


async def test_status_is_healthy_on_a_running_system_and_names_a_dead_relay(
    settings: Settings, clean_store: Any
) -> None:
    config = isolated(
        settings,
        command_api_port=COMMAND_PORT,
        query_api_port=QUERY_PORT,
        relay_metrics_port=RELAY_METRICS,
        projector_metrics_port=PROJECTOR_METRICS,
    )
    with running_system(config, COMMAND_PORT, QUERY_PORT):
        done = await run_cli(config, "status", "--json")
        facts = json.loads(done.stdout)
        assert done.returncode == 0 and facts["healthy"], facts["problems"]
        assert all(service["up"] for service in facts["services"])
        assert set(facts["projections"]) == {"redis", "comments", "votes"}
        assert all(p["low_water"] is not None for p in facts["projections"].values())
        relay = next(s for s in facts["services"] if s["name"] == "relay")
        assert relay["leader"] is True
        print(json.dumps(facts, indent=2))  # the closing note shows it
    # The system is stopped now: a relay alone is not a healthy system.
    relay_only = start_process(["relay"], {"TALLY_RELAY_METRICS_PORT": str(RELAY_METRICS)})
    try:
        done = await run_cli(config, "status", "--json")
    finally:
        stop_service(relay_only)
    facts = json.loads(done.stdout)
    assert done.returncode == 1
    assert any(p.startswith("command API is down") for p in facts["problems"]), facts
