"""Projection lag, from the ledger and the checkpoints, and its Prometheus gauges.

The test database is shared by the whole run, so other tests' events are there too: lag is
asserted as at least what this test appended, and as nothing right after a catch-up (tests
run one at a time, so nothing else appends meanwhile).
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass

from prometheus_client import REGISTRY

from eventstore.store import START, EventStore, Metadata, NewEvent, StreamState
from projections.metrics import projection_status, refresh_lag_gauges
from projections.receipts import ReceiptsIndex
from projections.runner import ProjectionRunner


@dataclass(frozen=True)
class NeverRun:
    """Any object with a name will do: lag reads nothing else of a projector."""

    name: str


async def _append(store: EventStore, tenant: str, meta: Metadata, count: int) -> None:
    for n in range(count):
        await store.append(
            f"{tenant}:misc", [NewEvent("Noted", {"n": n})], StreamState.ANY, tenant, meta
        )


def gauge(name: str, projector: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"projector": projector})


async def test_lag_counts_what_the_projector_has_not_projected_yet(
    store: EventStore, tenant: str, meta: Metadata
) -> None:
    receipts = ProjectionRunner(store.pool, ReceiptsIndex())
    await receipts.catch_up()
    [caught_up] = await refresh_lag_gauges(store.pool, [ReceiptsIndex()])
    assert (caught_up.events_behind, caught_up.seconds_behind) == (0, 0.0)
    assert caught_up.updated_at is not None  # the runner has been here (even on no events)

    await _append(store, tenant, meta, 5)
    await asyncio.sleep(0.2)
    [behind] = await refresh_lag_gauges(store.pool, [ReceiptsIndex()])
    assert behind.name == "receipts"
    assert behind.events_behind >= 5
    assert behind.seconds_behind >= 0.15  # the first of them has waited since it was appended
    assert behind.checkpoint == caught_up.checkpoint
    assert gauge("valueledger_projection_lag_events", "receipts") == behind.events_behind
    assert gauge("valueledger_projection_lag_seconds", "receipts") == behind.seconds_behind

    assert await receipts.catch_up() >= 5
    [after] = await refresh_lag_gauges(store.pool, [ReceiptsIndex()])
    assert (after.events_behind, after.seconds_behind) == (0, 0.0)
    assert after.checkpoint > behind.checkpoint
    assert after.updated_at is not None
    assert after.updated_at >= caught_up.updated_at
    assert gauge("valueledger_projection_lag_events", "receipts") == 0
    assert gauge("valueledger_projection_lag_seconds", "receipts") == 0


async def test_a_projector_that_never_ran_is_behind_by_the_whole_ledger(
    store: EventStore, tenant: str, meta: Metadata
) -> None:
    await _append(store, tenant, meta, 3)
    never = NeverRun(f"never_{secrets.token_hex(3)}")
    [status] = await projection_status(store.pool, [never])
    assert status.checkpoint == START
    assert status.updated_at is None
    total = await store.pool.fetchval("SELECT count(*) FROM events")
    assert status.events_behind >= 3
    assert status.events_behind <= total
    assert status.seconds_behind > 0


async def test_the_count_of_events_behind_is_capped(
    store: EventStore, tenant: str, meta: Metadata
) -> None:
    """A projector far behind costs a bounded count: it reads as 'at least the cap'."""
    await _append(store, tenant, meta, 3)
    [status] = await projection_status(store.pool, [NeverRun("far_behind")], cap=2)
    assert status.events_behind == 2


async def test_statuses_come_in_the_order_asked(store: EventStore) -> None:
    names = ["b_projector", "receipts", "a_projector"]
    statuses = await projection_status(store.pool, [NeverRun(name) for name in names])
    assert [status.name for status in statuses] == names
