"""The receipts index query: a customer's chain in seq order, page after page."""

from __future__ import annotations

from eventstore.store import EventStore, Metadata, NewEvent, StreamState
from projections.queries import ReceiptEntry, receipts_index
from projections.receipts import ReceiptsIndex
from tests.projections.scenes import catch_up


async def test_receipts_page_by_seq(store: EventStore, tenant: str, meta: Metadata) -> None:
    recorded = await store.append(
        f"{tenant}:misc",
        [NewEvent("Noted", {"n": n}) for n in range(5)],
        StreamState.NO_STREAM,
        tenant,
        meta,
    )
    await catch_up(store, ReceiptsIndex())

    first = await receipts_index(store.pool, tenant, limit=3)
    rest = await receipts_index(store.pool, tenant, after_seq=first[-1].seq, limit=3)

    assert first + rest == [
        ReceiptEntry(
            seq=record.seq,
            type="Noted",
            stream_id=f"{tenant}:misc",
            recorded_at=record.recorded_at,
        )
        for record in recorded
    ]
    assert [entry.seq for entry in rest] == [4, 5]
    assert await receipts_index(store.pool, tenant, after_seq=5) == []
