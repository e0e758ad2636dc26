"""Projector processes killed during a rebalance, joining and leaving their groups over and over
under voting: every event is applied exactly once in effect."""

from __future__ import annotations

import asyncio
import random
import signal
import time
from typing import Any

import pytest

from tests.faults.harness import System, report


@pytest.mark.parametrize("seed", [50, 51])
async def test_projectors_killed_mid_rebalance_and_churning_apply_every_event_once(
    system: System, load: Any, seed: int
) -> None:
    rng = random.Random(seed)
    rounds = 4
    async with load(seed=seed) as run:
        await asyncio.sleep(3)
        for n in range(rounds):
            system.start("projector-2")  # joins: every group rebalances
            await asyncio.sleep(rng.uniform(0.2, 1.5))  # mid-rebalance, or just after
            if n % 2:  # the newcomer dies mid-rebalance
                system.kill("projector-2", signal.SIGKILL)
                await asyncio.sleep(rng.uniform(0.5, 2.0))
                continue
            system.kill("projector", signal.SIGKILL)  # the old member dies mid-rebalance
            await asyncio.sleep(rng.uniform(0.5, 2.0))
            system.start("projector")
            await asyncio.sleep(rng.uniform(0.5, 2.0))
            system.kill("projector-2", signal.SIGTERM)  # and the newcomer leaves cleanly
            await asyncio.to_thread(system.procs["projector-2"].wait, 30)
        back = time.monotonic()
        await asyncio.sleep(2)
        took, verdict = await run.finish()
    report(
        "projector-churn",
        seed=seed,
        rounds=rounds,
        healed_s=round(time.monotonic() - back, 1),
        after_load_s=round(took, 1),
        gap_heals=sum(1 for e in system.logged("gap_healing") if e.get("cause") == "gap"),
        acked=len(run.voters.tally.acked),
    )
    assert verdict.ok, str(verdict)
    assert not run.readers.reads.anomalies, run.readers.reads.anomalies[:5]
