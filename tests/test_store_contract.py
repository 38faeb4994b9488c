"""The store's contract, run against the embedded and the external PostgreSQL alike."""

from __future__ import annotations

import pytest

from eventstore.errors import ConcurrencyError, InvalidAppendError
from eventstore.receipts import GENESIS_HASH, record_hash
from eventstore.store import EventStore, Metadata, NewEvent, StreamState


async def test_appends_chain_per_tenant_and_version_per_stream(
    contract_store: EventStore, tenant: str, meta: Metadata
) -> None:
    first = await contract_store.append(
        f"{tenant}-account-1",
        [NewEvent("Opened", {"n": 1}), NewEvent("Named", {"name": "A"})],
        StreamState.NO_STREAM,
        tenant,
        meta,
    )
    second = await contract_store.append(
        f"{tenant}-account-2", [NewEvent("Opened", {"n": 2})], StreamState.NO_STREAM, tenant, meta
    )
    assert [(e.seq, e.version) for e in first + second] == [(1, 1), (2, 2), (3, 1)]
    assert first[0].prev_hash == GENESIS_HASH
    assert first[1].prev_hash == first[0].hash
    assert second[0].prev_hash == first[1].hash
    for event in first + second:
        assert record_hash(event.canonical) == event.hash
    stored = await contract_store.read_stream(f"{tenant}-account-1")
    assert stored == first


async def test_stream_ids_lists_a_tenants_streams_by_prefix_once_each(
    contract_store: EventStore, tenant: str, meta: Metadata
) -> None:
    for stream, count in ((f"{tenant}:def:b", 2), (f"{tenant}:def:a", 1), (f"{tenant}:other", 1)):
        for _ in range(count):
            await contract_store.append(stream, [NewEvent("A", {})], StreamState.ANY, tenant, meta)
    assert await contract_store.stream_ids(tenant, f"{tenant}:def:") == [
        f"{tenant}:def:a",
        f"{tenant}:def:b",
    ]
    assert len(await contract_store.stream_ids(tenant)) == 3
    assert await contract_store.stream_ids(f"{tenant}-none") == []
    # A prefix is literal text, not a pattern.
    assert await contract_store.stream_ids(tenant, f"{tenant}:def%") == []


async def test_expected_version_mismatch_raises_and_writes_nothing(
    contract_store: EventStore, tenant: str, meta: Metadata
) -> None:
    await contract_store.append(
        f"{tenant}-s-1", [NewEvent("A", {})], StreamState.NO_STREAM, tenant, meta
    )
    with pytest.raises(ConcurrencyError) as caught:
        await contract_store.append(f"{tenant}-s-1", [NewEvent("B", {})], 5, tenant, meta)
    assert (caught.value.expected, caught.value.actual) == (5, 1)
    with pytest.raises(ConcurrencyError) as caught:
        await contract_store.append(
            f"{tenant}-s-1", [NewEvent("B", {})], StreamState.NO_STREAM, tenant, meta
        )
    assert caught.value.actual == 1
    assert len(await contract_store.read_tenant(tenant)) == 1


async def test_float_is_refused_with_its_path(
    contract_store: EventStore, tenant: str, meta: Metadata
) -> None:
    with pytest.raises(InvalidAppendError, match=r"events\[0\]\.data\.amount"):
        await contract_store.append(
            f"{tenant}-s-1", [NewEvent("A", {"amount": 1.5})], StreamState.ANY, tenant, meta
        )
    assert await contract_store.read_tenant(tenant) == []
