"""A bulk write sends again only the items the engine refused for now, and never parks them."""

from __future__ import annotations

from typing import Any

import pytest

from projectors.base import StoreBusy
from projectors.es_indices import bulk_write


class ScriptedEngine:
    """Answers each bulk call with the next statuses of the script, one per item sent."""

    def __init__(self, *script: list[int]) -> None:
        self.script = list(script)
        self.sent: list[list[str]] = []

    async def bulk(self, operations: list[dict[str, Any]]) -> dict[str, Any]:
        ids = [op["index"]["_id"] for op in operations[::2]]
        self.sent.append(ids)
        statuses = self.script.pop(0) if self.script else [201] * len(ids)
        items = []
        for status in statuses:
            result: dict[str, Any] = {"status": status}
            if status >= 300:
                kind = "es_rejected_execution_exception" if status == 429 else "mapper_exception"
                result["error"] = {"type": kind, "reason": "..."}
            items.append({"index": result})
        return {"errors": any(s >= 300 for s in statuses), "items": items}


def _operations(count: int) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [({"index": {"_index": "i", "_id": str(n)}}, {"n": n}) for n in range(count)]


async def test_items_refused_for_now_are_sent_again_alone_until_taken() -> None:
    engine = ScriptedEngine([201, 429, 201, 429, 409], [429, 201], [201])
    refused = await bulk_write(engine, _operations(5))  # type: ignore[arg-type]
    assert refused == []  # nothing refused for good: nothing to park
    assert engine.sent == [["0", "1", "2", "3", "4"], ["1", "3"], ["1"]]


async def test_a_bad_document_is_returned_by_its_place_in_the_request() -> None:
    engine = ScriptedEngine([429, 201, 400], [400])
    refused = await bulk_write(engine, _operations(3))  # type: ignore[arg-type]
    assert [n for n, _ in refused] == [0, 2]
    assert all(result["status"] == 400 for _, result in refused)


async def test_an_engine_that_keeps_refusing_is_store_busy_after_the_patience() -> None:
    engine = ScriptedEngine(*([[429, 429]] * 100))
    with pytest.raises(StoreBusy, match="refused a write for now"):
        await bulk_write(engine, _operations(2), patience=0.3)  # type: ignore[arg-type]
    assert 2 <= len(engine.sent) < 10  # backed off, not a hot loop
