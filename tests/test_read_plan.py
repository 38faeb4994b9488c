"""Reading in commit order must walk the commit-order index and stop at the limit.

A regression here does not fail any functional test, it only makes every projector batch
read and sort the whole rest of the ledger (the batch cost grows with the ledger): it was
found by the projections benchmark, when ORDER BY named an output alias instead of the
column. The plan is checked instead of a timing.
"""

from __future__ import annotations

import json

from eventstore.store import _READ_COMMITTED_SQL, EventStore


def _nodes(plan: dict[str, object]) -> list[str]:
    children = plan.get("Plans", [])
    assert isinstance(children, list)
    return [str(plan["Node Type"]), *(node for child in children for node in _nodes(child))]


async def test_the_commit_order_read_uses_the_index_without_sorting(store: EventStore) -> None:
    async with store.pool.acquire() as connection, connection.transaction():
        # A test ledger is small, so cost alone may pick any plan; forbidding the others shows
        # whether the index can give the order at all (a Sort node then means it cannot).
        for plan_kind in ("seqscan", "bitmapscan", "sort"):
            await connection.execute(f"SET LOCAL enable_{plan_kind} = off")
        rows = await connection.fetch(
            f"EXPLAIN (FORMAT JSON) {_READ_COMMITTED_SQL}", 0, "0", 0, 1000
        )
    plan = json.loads(rows[0][0])[0]["Plan"]
    nodes = _nodes(plan)
    assert not any("Sort" in node for node in nodes), nodes  # Sort or Incremental Sort
    assert "Limit" in nodes
    assert any("Index" in node for node in nodes), nodes
