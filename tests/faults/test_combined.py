"""The combined run: projectors, relay and broker SIGKILLed in turn under voting.

Repeated with other seeds and timings; each run must end with acknowledged votes == the fold of
the log == every read model == what reads answer, with no manual step.
"""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import pytest

from tally import stack
from tests.faults.harness import System, report

# (seed, seconds before each kill: projectors, relay, broker; seconds a process stays dead)
TIMINGS = [(1, (15, 15, 15), 3), (2, (8, 12, 6), 1), (3, (20, 5, 10), 5)]


@pytest.mark.parametrize(("seed", "gaps", "dead"), TIMINGS)
async def test_projectors_relay_and_broker_killed_in_turn_lose_no_vote(
    system: System, load: Any, servers: dict[str, stack.Server], seed: int, gaps: Any, dead: int
) -> None:
    broker = servers["kafka"]
    assert isinstance(broker, stack.Kafka)
    async with load(seed) as run:
        started = time.monotonic()
        await asyncio.sleep(gaps[0])
        system.kill("projector", signal.SIGKILL)
        await asyncio.sleep(dead)
        system.start("projector")
        await asyncio.sleep(gaps[1])
        system.kill("relay", signal.SIGKILL)
        await asyncio.sleep(dead)
        system.start("relay")
        await asyncio.sleep(gaps[2])
        for node in broker.nodes:  # every broker: on the single-node stack, the only one
            await asyncio.to_thread(broker.kill_node, node)
        await asyncio.sleep(dead)
        await asyncio.to_thread(broker.up)
        await asyncio.sleep(10)
        took, verdict = await run.finish()
    report(
        "combined",
        seed=seed,
        gaps=gaps,
        dead_s=dead,
        load_s=round(time.monotonic() - started - took, 1),
        healed_s=round(took, 1),
        behind_at_stop=run.at_stop.summary(),  # what was still catching up when the load stopped
        acked=len(run.voters.tally.acked),
        sent=run.voters.tally.sent,
        vote_statuses=run.voters.tally.statuses,
        read_statuses=run.readers.reads.statuses,
        repaired=len(system.logged("read_model_repaired")),
    )
    assert verdict.ok, str(verdict)
    assert all(system.alive().values()), system.alive()  # nothing died of the faults
    assert not run.readers.reads.anomalies, run.readers.reads.anomalies[:5]
    # The live path alone got it right: the reconciler, the safety net, had nothing to repair.
    assert not system.logged("read_model_repaired"), system.logged("read_model_repaired")[:2]
