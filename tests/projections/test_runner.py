"""The projection runner: exactly once, in commit-safe order, crash-safe, rebuildable.

Uses the receipts index (every record becomes one row) because its expected content is the
ledger itself, so any lost, doubled or reordered event shows.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg
import msgspec
import pytest

from eventstore.store import EventStore, Metadata, NewEvent, RecordedEvent, StreamState
from projections.receipts import RECEIPTS, ReceiptRow, ReceiptsIndex
from projections.runner import ProjectionRunner, rebuild
from projections.tables import View


async def _append(store: EventStore, tenant: str, meta: Metadata, count: int) -> None:
    for n in range(count):
        await store.append(
            f"{tenant}:misc", [NewEvent("Noted", {"n": n})], StreamState.ANY, tenant, meta
        )


async def _indexed(pool: asyncpg.Pool, tenant: str) -> list[tuple[int, str]]:
    rows = await pool.fetch(
        "SELECT seq, type FROM read_models.receipts WHERE tenant = $1 ORDER BY seq", tenant
    )
    return [(row["seq"], row["type"]) for row in rows]


async def test_catching_up_indexes_every_record_once(
    store: EventStore, tenant: str, meta: Metadata
) -> None:
    await _append(store, tenant, meta, 7)
    runner = ProjectionRunner(store.pool, ReceiptsIndex(), batch_size=3)
    await runner.catch_up()
    assert await _indexed(store.pool, tenant) == [(n, "Noted") for n in range(1, 8)]
    await _append(store, tenant, meta, 2)
    assert await runner.catch_up() >= 2
    assert await runner.catch_up() == 0
    assert [seq for seq, _ in await _indexed(store.pool, tenant)] == list(range(1, 10))


async def test_racing_runners_never_apply_an_event_twice(
    store: EventStore, tenant: str, meta: Metadata
) -> None:
    """Each batch locks the checkpoint row, so two runners queue instead of overlapping. A
    doubled event would break the primary key or the count."""
    await _append(store, tenant, meta, 20)
    seen: list[int] = []

    class Counting(ReceiptsIndex):
        def apply(self, view: View, record: RecordedEvent, event: msgspec.Struct | None) -> bool:
            if record.tenant == tenant:
                seen.append(record.seq)
            return super().apply(view, record, event)

    runners = [ProjectionRunner(store.pool, Counting(), batch_size=4) for _ in range(3)]
    await asyncio.gather(*(runner.catch_up() for runner in runners))
    assert sorted(seen) == list(range(1, 21))
    assert seen == sorted(seen)  # chain order within the tenant


async def test_a_batch_that_fails_leaves_rows_and_checkpoint_as_they_were(
    store: EventStore, tenant: str, meta: Metadata
) -> None:
    runner = ProjectionRunner(store.pool, ReceiptsIndex())
    await runner.catch_up()
    await _append(store, tenant, meta, 5)

    class Failing(ReceiptsIndex):
        def apply(self, view: View, record: RecordedEvent, event: msgspec.Struct | None) -> bool:
            if record.tenant == tenant and record.seq == 4:
                raise RuntimeError("the projector broke on seq 4")
            return super().apply(view, record, event)

    with pytest.raises(RuntimeError, match="seq 4"):
        await ProjectionRunner(store.pool, Failing()).catch_up()
    assert await _indexed(store.pool, tenant) == []  # the whole batch rolled back
    await runner.catch_up()
    assert [seq for seq, _ in await _indexed(store.pool, tenant)] == [1, 2, 3, 4, 5]


async def test_a_rebuild_swaps_in_tables_equal_to_the_live_ones(
    store: EventStore, tenant: str, meta: Metadata, database_url: str
) -> None:
    await _append(store, tenant, meta, 6)
    live = ProjectionRunner(store.pool, ReceiptsIndex())
    await live.catch_up()
    before = await store.pool.fetch("SELECT * FROM read_models.receipts ORDER BY tenant, seq")
    # A row the ledger never held: the rebuild must not carry it over.
    await store.pool.execute(
        "INSERT INTO read_models.receipts VALUES ($1, 999, 'Forged', 'x', now())", tenant
    )
    owner = await asyncpg.connect(database_url)
    try:
        progressed: list[int] = []
        await rebuild(owner, ReceiptsIndex(), progress=progressed.append, batch_size=50)
    finally:
        await owner.close()
    after = await store.pool.fetch("SELECT * FROM read_models.receipts ORDER BY tenant, seq")
    assert [tuple(row) for row in after] == [tuple(row) for row in before]
    assert sum(progressed) >= len(before)
    await _append(store, tenant, meta, 1)
    assert await live.catch_up() >= 1  # the live runner goes on from the rebuild's checkpoint
    assert [seq for seq, _ in await _indexed(store.pool, tenant)] == list(range(1, 8))


def test_a_view_returns_what_the_batch_put_and_forgets_what_it_deleted() -> None:
    view = View()
    row = ReceiptRow(
        tenant="t", seq=1, type="A", stream_id="t:x", recorded_at=datetime(2026, 1, 1, tzinfo=UTC)
    )
    assert view.get(RECEIPTS, ("t", 1)) is None
    view.put(RECEIPTS, row)
    assert view.get(RECEIPTS, ("t", 1)) == row
    view.delete(RECEIPTS, ("t", 1))
    assert view.get(RECEIPTS, ("t", 1)) is None


async def test_under_concurrent_appends_on_many_tenants_each_event_is_seen_once_in_order(
    store: EventStore, tenant: str, meta: Metadata
) -> None:
    """While 8 tenants append concurrently and a runner follows them batch by batch, it sees
    every event exactly once, in the store's commit-safe order, each tenant's in chain order."""
    tenants = [f"{tenant}-{n}" for n in range(8)]
    seen: list[tuple[str, int]] = []

    class Recording(ReceiptsIndex):
        name = "order-probe"

        def apply(self, view: View, record: RecordedEvent, event: msgspec.Struct | None) -> bool:
            if record.tenant in tenants:
                seen.append((record.tenant, record.seq))
            return super().apply(view, record, event)

    runner = ProjectionRunner(store.pool, Recording(), batch_size=7)
    await runner.catch_up()  # the rest of the shared ledger first
    seen.clear()
    appending = asyncio.gather(
        *(
            store.append(
                f"{name}:misc:{n % 3}", [NewEvent("Noted", {"n": n})], StreamState.ANY, name, meta
            )
            for n in range(40)
            for name in tenants
        )
    )
    while not appending.done():
        await runner.step()
        await asyncio.sleep(0)
    await appending
    await runner.catch_up()

    assert len(seen) == len(set(seen)) == 8 * 40
    for name in tenants:
        assert [seq for owner, seq in seen if owner == name] == list(range(1, 41))
    committed = [
        (record.tenant, record.seq)
        for record in await store.read_all(limit=1_000_000)
        if record.tenant in tenants
    ]
    assert seen == committed
